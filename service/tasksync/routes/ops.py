"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import collections
import gc

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .common import service_of


@get("/health")
async def health() -> dict[str, str]:
    # Liveness: the event loop answers. Deliberately checks nothing else, so a broker outage
    # makes the pod unready, not restarted.
    return {"status": "ok"}


@get("/health/ready")
async def ready(request: Request) -> Response:
    service = service_of(request)
    readiness = await service.readiness()
    body = {
        "ready": readiness.ready,
        "broker": {"name": service.node.broker.name, "reachable": readiness.broker},
        "draining": readiness.draining,
        "full": readiness.full,
        "connections": service.node.hub.connection_count,
        "limits_generation": service.limits_file.generation,
    }
    return Response(body, status_code=200 if readiness.ready else 503)


@get("/debug/heap")
async def heap(request: Request) -> Response:
    if not service_of(request).settings.debug_endpoints:
        return Response(
            {"error": "not_found", "message": "debug endpoints are off (TASKSYNC_DEBUG_ENDPOINTS)"}, status_code=404
        )
    # Cyclic garbage (finished tasks and their frames) would otherwise count as live.
    gc.collect()
    objects = gc.get_objects()
    by_type = collections.Counter(type(o).__name__ for o in objects)
    return Response({"objects": len(objects), "by_type": dict(by_type.most_common(15))})


@get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(service_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
