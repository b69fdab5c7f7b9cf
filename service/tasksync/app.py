"""Build the Litestar application around a Service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.logging.config import LoggingConfig

from .demo import demo_route_handlers
from .routes.dapr import dapr_route_handlers
from .routes.ops import health, heap, metrics, ready
from .routes.publish import publish_events
from .routes.ws import ws_endpoint
from .service import Service
from .settings import Settings

CLIENT_ERRORS: set[int | type[Exception]] = {400, 401, 403, 404, 405, 409, 413, 415, 422, 429}


def create_app(settings: Settings | None = None, *, service: Service | None = None) -> Litestar:
    service = service or Service(settings or Settings())

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = Litestar(
        route_handlers=[
            ws_endpoint,
            publish_events,
            health,
            ready,
            metrics,
            heap,
            *dapr_route_handlers(service.settings),
        ]
        + (demo_route_handlers(service.settings) if service.settings.dev else []),
        lifespan=[lifespan],
        request_max_body_size=service.settings.max_body_bytes,
        openapi_config=None,
        # Unexpected errors must reach the log in production too, not only in debug mode.
        # A client's error (404, 413, ...) is answered, not a fault of ours: no stack trace for it.
        logging_config=LoggingConfig(
            log_exceptions="always",
            disable_stack_trace=CLIENT_ERRORS,
            # Litestar's lines go to the root logger that `tasksync serve` configures, in the one
            # format of every other line; Litestar would otherwise replace the root's handler.
            configure_root_logger=False,
            loggers={"litestar": {"handlers": [], "propagate": True}},
        ),
    )
    app.state.service = service
    return app
