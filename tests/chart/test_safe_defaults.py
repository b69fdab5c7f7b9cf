"""What a new user's install publishes and accepts: the Ingress routes only /ws unless told
otherwise, Dapr deliveries need the app token, installs that could never work are refused, and
the notes say what to do next and warn about every risky setting in force."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.charttools import (
    MINIMAL_VALUES,
    NAMESPACE,
    RELEASE,
    Helm,
    container,
    env_of,
    find,
    one,
    render_notes,
)

HOST = "sync.example.com"

# Everything the service answers besides /ws, with the default Dapr route.
INTERNAL_ENDPOINTS = (
    "/dapr/subscribe",
    "/dapr/task-events",
    "/debug/heap",
    "/health",
    "/health/ready",
    "/metrics",
    "/v1/events",
)


def with_ingress(hosts: list[dict[str, Any]], **ingress: Any) -> dict[str, Any]:
    return {**MINIMAL_VALUES, "ingress": {"enabled": True, "hosts": hosts, **ingress}}


def routed(objs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(host, path, pathType) of every rule of the Ingress."""
    return [
        (rule["host"], path["path"], path["pathType"])
        for rule in one(objs, "Ingress")["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]


def reaches(path: str, path_type: str, endpoint: str) -> bool:
    """Whether an Ingress path sends requests for `endpoint` to the service (Kubernetes' Exact and
    Prefix matching; Prefix matches whole path elements)."""
    if path_type == "Exact":
        return endpoint == path
    prefix = path.rstrip("/")
    return endpoint == prefix or endpoint.startswith(prefix + "/")


def flat(text: str) -> str:
    """Text with its line wrapping undone."""
    return " ".join(text.split())


def test_an_ingress_host_without_paths_routes_exactly_ws(helm: Helm) -> None:
    rules = routed(helm.template(with_ingress([{"host": HOST}])))
    assert rules == [(HOST, "/ws", "Exact")]
    published = [e for e in INTERNAL_ENDPOINTS for _, path, kind in rules if reaches(path, kind, e)]
    assert published == []


def test_paths_listed_for_a_host_are_routed_as_given(helm: Helm) -> None:
    paths = [{"path": "/ws", "pathType": "Exact"}, {"path": "/v1/events", "pathType": "Exact"}]
    rules = routed(helm.template(with_ingress([{"host": HOST, "paths": paths}, {"host": "other.example.com"}])))
    assert rules == [(HOST, "/ws", "Exact"), (HOST, "/v1/events", "Exact"), ("other.example.com", "/ws", "Exact")]


def test_an_ingress_without_hosts_is_refused(helm: Helm) -> None:
    error = helm.template_error({**MINIMAL_VALUES, "ingress": {"enabled": True}})
    assert "ingress.enabled needs at least one host in ingress.hosts" in error


def test_dapr_without_a_given_token_gets_a_generated_one_for_sidecar_and_service(helm: Helm) -> None:
    objs = helm.template(MINIMAL_VALUES)
    deployment = one(objs, "Deployment", RELEASE)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["dapr.io/enabled"] == "true"
    secret_name = annotations["dapr.io/app-token-secret"]
    assert secret_name == f"{RELEASE}-dapr-token"
    env = env_of(container(deployment, "tasksync"))
    assert env["TASKSYNC_DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": "token"}
    token = base64.b64decode(one(objs, "Secret", secret_name)["data"]["token"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{48}", token), token


def test_helm_template_generates_a_new_token_each_render(helm: Helm) -> None:
    # lookup reads nothing without a cluster: what values.yaml and the README warn about.
    def token() -> bytes:
        return base64.b64decode(one(helm.template(MINIMAL_VALUES), "Secret", f"{RELEASE}-dapr-token")["data"]["token"])

    assert token() != token()


def test_a_given_dapr_token_is_the_one_stored(helm: Helm) -> None:
    objs = helm.template({**MINIMAL_VALUES, "dapr": {"appToken": "chosen-token"}})
    secret = one(objs, "Secret", f"{RELEASE}-dapr-token")
    assert base64.b64decode(secret["data"]["token"]) == b"chosen-token"


def test_an_existing_dapr_token_secret_is_referenced_not_created(helm: Helm) -> None:
    objs = helm.template({**MINIMAL_VALUES, "dapr": {"appTokenExistingSecret": "platform-dapr-token"}})
    deployment = one(objs, "Deployment", RELEASE)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["dapr.io/app-token-secret"] == "platform-dapr-token"
    env = env_of(container(deployment, "tasksync"))
    assert env["TASKSYNC_DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "platform-dapr-token",
        "key": "token",
    }
    assert not find(objs, "Secret", f"{RELEASE}-dapr-token")


def test_an_install_that_could_never_receive_an_event_is_refused(helm: Helm) -> None:
    error = helm.template_error({**MINIMAL_VALUES, "dapr": {"enabled": False}})
    assert "dapr.enabled is false and no apiKeys are set" in error
    # Either way in is enough.
    assert helm.template({**MINIMAL_VALUES, "dapr": {"enabled": False}, "apiKeys": {"keys": ["k"]}})
    assert helm.template({**MINIMAL_VALUES, "dapr": {"enabled": False}, "apiKeys": {"existingSecret": "keys"}})


def test_notes_say_how_to_reach_ws_publish_and_find_the_dashboard(helm: Helm, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path / "minimal", MINIMAL_VALUES)
    assert f"kubectl -n {NAMESPACE} port-forward svc/{RELEASE} 8005:8005" in notes
    assert "enable the Ingress" in notes
    assert "POST http://localhost:3500/v1.0/publish/pubsub/task-events" in notes
    assert f'Secret "{RELEASE}-dapr-token" (generated' in flat(notes)
    assert "set monitoring.dashboard.enabled=true" in notes

    values = {
        **with_ingress([{"host": HOST}], tls=[{"secretName": "tls", "hosts": [HOST]}]),
        "allowedOrigins": ["https://app.example.com"],
        "monitoring": {"dashboard": {"enabled": True, "namespace": "monitoring"}},
    }
    notes = render_notes(helm, tmp_path / "ingress", values)
    assert f"wss://{HOST}/ws" in notes
    assert f'the dashboard "TaskSync", from the ConfigMap "{RELEASE}-dashboard" in namespace monitoring' in flat(notes)
    assert "WARNINGS" not in notes, "nothing risky is set"


@pytest.mark.parametrize(
    ("values", "warning"),
    [
        (MINIMAL_VALUES, "allowedOrigins is empty"),
        (with_ingress([{"host": HOST}]), "The Ingress has no TLS"),
        (
            with_ingress([{"host": HOST, "paths": [{"path": "/", "pathType": "Prefix"}]}]),
            "it publishes " + ", ".join(INTERNAL_ENDPOINTS) + " to whoever reaches it",
        ),
        (
            with_ingress([{"host": HOST, "paths": [{"path": "/dapr", "pathType": "Prefix"}]}]),
            "it publishes /dapr/subscribe, /dapr/task-events to whoever reaches it",
        ),
        ({**MINIMAL_VALUES, "service": {"type": "LoadBalancer"}}, "service.type LoadBalancer publishes every endpoint"),
    ],
    ids=["any-origin", "ingress-without-tls", "ingress-routes-everything", "ingress-routes-dapr", "load-balancer"],
)
def test_notes_warn_about_each_risky_setting(helm: Helm, tmp_path: Path, values: dict[str, Any], warning: str) -> None:
    notes = render_notes(helm, tmp_path, values)
    assert warning in flat(notes.partition("\nWARNINGS\n")[2]), notes
