"""`helm template` for several value combinations: every object valid, and wired together the
way the service, Dapr and the operator expect."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tasksync.metrics import Metrics
from tasksync.plugins import PluginContext
from tasksync.settings import load_settings
from tasksync_operator.ratelimits import CONFIGMAP_KEY, configmap_name
from tasksync_plugins.header_auth import HeaderAuthSettings
from tasksync_plugins.jwt_auth import JwtSettings
from tests.chart import objects
from tests.chart.charttools import (
    DASHBOARD,
    MINIMAL_VALUES,
    NAMESPACE,
    PRODUCTION_VALUES,
    RELEASE,
    Helm,
    container,
    env_of,
    find,
    one,
    render_notes,
)

# Every optional part switched on around the memory broker (one replica).
EVERYTHING_SINGLE_REPLICA: dict[str, Any] = {
    "auth": {"plugin": "header", "header": {"trustedProxies": ["10.0.0.0/8"], "secret": "proxy-secret"}},
    "apiKeys": {"keys": ["publisher-a", "publisher-b"]},
    "allowedOrigins": ["https://app.example.com"],
    "terminationGracePeriodSeconds": 60,
    "extraEnv": [{"name": "TASKSYNC_HISTORY_SIZE", "value": "5000"}],
    "ingress": {
        "enabled": True,
        "hosts": [{"host": "sync.example.com"}],
        "tls": [{"secretName": "sync-tls", "hosts": ["sync.example.com"]}],
    },
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {"enabled": True},
    "dapr": {
        "appToken": "dapr-token",
        "subscription": {"mode": "declarative", "metadata": {"rawPayload": "false"}},
        "component": {"enabled": True},
    },
    "operator": {"watchAllNamespaces": True},
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
}

# Publishing over HTTP only: no Dapr, no operator, two replicas on an inline Redis URL.
HTTP_ONLY_REDIS: dict[str, Any] = {
    "auth": {"jwt": {"existingSecret": "jwt-keys"}},
    "replicaCount": 2,
    "broker": {"url": "redis://redis:6379/0"},
    "apiKeys": {"existingSecret": "publishers"},
    "dapr": {"enabled": False},
    "operator": {"enabled": False},
    "serviceAccount": {"create": False},
    "topologySpread": {"enabled": False},
}

SCENARIOS: dict[str, tuple[dict[str, Any], tuple[Path, ...]]] = {
    "minimal": (MINIMAL_VALUES, ()),
    "production": ({}, (PRODUCTION_VALUES,)),
    "everything-single-replica": (EVERYTHING_SINGLE_REPLICA, ()),
    "http-only-redis": (HTTP_ONLY_REDIS, ()),
}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def rendered(request: pytest.FixtureRequest, helm: Helm) -> list[dict[str, Any]]:
    values, files = SCENARIOS[request.param]
    return helm.template(values, files)


def server(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment", RELEASE)


def test_every_rendered_object_is_valid(rendered: list[dict[str, Any]]) -> None:
    checked = {f"{o['kind']}/{o['metadata']['name']}": objects.validate(o) for o in rendered}
    assert checked, "nothing rendered"


def test_every_object_carries_the_standard_labels(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "tasksync", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"]
        assert labels["helm.sh/chart"].startswith("tasksync-")


def test_selectors_find_the_pods_they_are_meant_for(rendered: list[dict[str, Any]]) -> None:
    deployment = server(rendered)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(match_labels: dict[str, str]) -> bool:
        return match_labels.items() <= pod_labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    service = one(rendered, "Service", RELEASE)
    assert selects(service["spec"]["selector"])
    assert service["spec"]["ports"][0]["targetPort"] == container(deployment, "tasksync")["ports"][0]["name"]
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for obj in find(rendered, kind):
            selector = obj["spec"]["selector"] if kind == "PodDisruptionBudget" else obj["spec"]["podSelector"]
            assert selects(selector["matchLabels"]), kind
    for constraint in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        assert selects(constraint["labelSelector"]["matchLabels"])
    for hpa in find(rendered, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    for ingress in find(rendered, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {"name": RELEASE, "port": {"name": "http"}}
    for monitor in find(rendered, "ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_the_service_container_runs_locked_down(rendered: list[dict[str, Any]]) -> None:
    pod = server(rendered)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in (*pod["containers"], *one(rendered, "Pod")["spec"]["containers"]):
        context = c["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container(server(rendered), "tasksync")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_probes_and_shutdown_fit_the_services_drain(rendered: list[dict[str, Any]]) -> None:
    pod = server(rendered)["spec"]["template"]["spec"]
    tasksync = container(server(rendered), "tasksync")
    assert tasksync["command"] == ["tasksync", "serve"]
    assert tasksync["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert tasksync["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    env = env_of(tasksync)
    pre_stop = tasksync["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = float(env["TASKSYNC_DRAIN_GRACE"]["value"])
    assert float(env["TASKSYNC_DRAIN_WINDOW"]["value"]) <= grace
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace


def test_the_limits_configmap_the_operator_writes_is_mounted_where_the_service_watches(
    rendered: list[dict[str, Any]],
) -> None:
    deployment = server(rendered)
    tasksync = container(deployment, "tasksync")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    # The operator names the ConfigMap after the RateLimitPolicy's spec.target, the instance.
    assert volume["configMap"] == {"name": configmap_name(RELEASE), "optional": True}
    mount = next(m for m in tasksync["volumeMounts"] if m["name"] == volume["name"])
    assert "subPath" not in mount, "a subPath mount never sees the ConfigMap change"
    limits_file = env_of(tasksync)["TASKSYNC_LIMITS_FILE"]["value"]
    assert limits_file == f"{mount['mountPath']}/{CONFIGMAP_KEY}"


def _environment(objs: list[dict[str, Any]], tasksync: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the pod would see it, reading the chart's own Secrets and
    standing in for existing ones."""
    secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in find(objs, "Secret")
    }
    environ = {}
    for name, entry in env_of(tasksync).items():
        if "value" in entry:
            environ[name] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        stand_in = "redis://redis:6379/0" if name == "TASKSYNC_BROKER" else f"{ref['name']}/{ref['key']}"
        environ[name] = secrets.get(ref["name"], {}).get(ref["key"], stand_in)
    return environ


def test_the_environment_is_one_the_service_and_its_plugins_accept(rendered: list[dict[str, Any]]) -> None:
    tasksync = container(server(rendered), "tasksync")
    environ = _environment(rendered, tasksync)
    settings = load_settings(environ=environ)
    assert settings.host == "0.0.0.0"
    assert settings.port == 8005
    assert settings.auth in ("jwt", "header")
    # Every TASKSYNC_* variable must mean something: a service setting or an auth plugin's.
    context = PluginContext(settings, Metrics(), environ)
    known = {f"TASKSYNC_{field.upper()}" for field in settings.__struct_fields__}
    for prefix, struct in (("TASKSYNC_JWT_", JwtSettings), ("TASKSYNC_HEADER_AUTH_", HeaderAuthSettings)):
        context.plugin_settings(prefix, struct)
        known |= {prefix + field.upper() for field in struct.__struct_fields__}
    assert {name for name in environ if name.startswith("TASKSYNC_")} <= known


def test_the_dapr_token_reaches_the_sidecar_and_the_service_alike(rendered: list[dict[str, Any]]) -> None:
    deployment = server(rendered)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    token = env_of(container(deployment, "tasksync")).get("TASKSYNC_DAPR_API_TOKEN")
    if annotations.get("dapr.io/enabled") != "true":
        assert token is None
        return
    # Dapr reads the key "token" of the Secret the annotation names.
    secret_name = annotations["dapr.io/app-token-secret"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": "token"}
    for secret in find(rendered, "Secret", secret_name):
        assert base64.b64decode(secret["data"]["token"]), "an empty token would leave /dapr/* refusing Dapr"


def test_dapr_annotations_and_subscription_mode(rendered: list[dict[str, Any]]) -> None:
    deployment = server(rendered)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    env = {name: entry.get("value") for name, entry in env_of(container(deployment, "tasksync")).items()}
    subscriptions = find(rendered, "TaskSyncSubscription")
    if annotations.get("dapr.io/enabled") != "true":
        assert not subscriptions
        return
    assert annotations["dapr.io/app-port"] == "8005"
    app_id = annotations["dapr.io/app-id"]
    if subscriptions:
        (subscription,) = subscriptions
        assert env["TASKSYNC_DAPR_SUBSCRIBE"] == "false", "declarative: no second, programmatic subscription"
        assert subscription["spec"]["scopes"] == [app_id]
        assert subscription["spec"]["route"] == env["TASKSYNC_DAPR_ROUTE"]
        assert subscription["spec"]["topic"] == env["TASKSYNC_DAPR_TOPIC"]
        assert subscription["spec"]["pubsubName"] == env["TASKSYNC_DAPR_PUBSUB_NAME"]
    else:
        assert env["TASKSYNC_DAPR_SUBSCRIBE"] == "true"
    for component in find(rendered, "Component"):
        assert component["metadata"]["name"] == env["TASKSYNC_DAPR_PUBSUB_NAME"]


def test_the_dashboard_configmap_carries_the_dashboard_file(rendered: list[dict[str, Any]]) -> None:
    for configmap in find(rendered, "ConfigMap", f"{RELEASE}-dashboard"):
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(configmap["data"]["tasksync.json"]) == json.loads(DASHBOARD.read_text())


def test_the_helm_test_pod_checks_readiness_through_the_service(rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (check,) = pod["spec"]["containers"]
    assert check["command"][-1] == f"http://{RELEASE}.{NAMESPACE}.svc:8005/health/ready"


def test_production_values_wire_secrets_by_reference_only(helm: Helm) -> None:
    objs = helm.template(files=(PRODUCTION_VALUES,))
    assert not find(objs, "Secret"), "every secret comes from an existing Secret"
    env = env_of(container(server(objs), "tasksync"))
    assert env["TASKSYNC_BROKER"]["valueFrom"]["secretKeyRef"] == {"name": "tasksync-redis", "key": "url"}
    assert env["TASKSYNC_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "tasksync-publishers"


def test_ingress_defaults_keep_long_lived_websockets_open(helm: Helm) -> None:
    values = {**MINIMAL_VALUES, "ingress": {"enabled": True, "hosts": [{"host": "sync.example.com"}]}}
    ingress = one(helm.template(values), "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600


def test_termination_grace_defaults_to_drain_plus_pre_stop(helm: Helm) -> None:
    values = {**MINIMAL_VALUES, "drain": {"windowSeconds": 5, "graceSeconds": 12.5, "preStopSeconds": 3}}
    pod = server(helm.template(values))["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 3 + 13 + 5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "auth.plugin jwt needs auth.jwt.secret"),
        ({"auth": {"plugin": "header"}}, "auth.plugin header needs"),
        ({**MINIMAL_VALUES, "replicaCount": 3}, "replicaCount 3 needs the Redis broker"),
        ({**MINIMAL_VALUES, "autoscaling": {"enabled": True}}, "autoscaling.enabled needs the Redis broker"),
        (
            {**MINIMAL_VALUES, "terminationGracePeriodSeconds": 30},
            "must exceed drain.preStopSeconds + drain.graceSeconds",
        ),
        ({**MINIMAL_VALUES, "drain": {"windowSeconds": 30}}, "drain.graceSeconds must be at least drain.windowSeconds"),
        ({"auth": {"jwt": {"secret": "a", "existingSecret": "b"}}}, "not both"),
    ],
    ids=[
        "no-jwt-key",
        "header-without-trust",
        "replicas-on-memory",
        "hpa-on-memory",
        "short-grace",
        "window-over-grace",
        "two-secrets",
    ],
)
def test_combinations_that_would_deploy_something_broken_are_refused(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    assert message in helm.template_error(values)


def test_the_memory_broker_accepts_one_replica_and_redis_many(helm: Helm) -> None:
    redis = {**MINIMAL_VALUES, "broker": {"url": "redis://redis:6379/0"}}
    assert server(helm.template({**redis, "replicaCount": 3}))["spec"]["replicas"] == 3
    assert one(helm.template({**redis, "autoscaling": {"enabled": True}}), "HorizontalPodAutoscaler")
    # An existing Secret's URL cannot be inspected; it is taken to be Redis.
    assert server(helm.template({**MINIMAL_VALUES, "broker": {"existingSecret": "redis"}, "replicaCount": 2}))


def test_the_memory_broker_is_replaced_not_rolled(helm: Helm) -> None:
    # Two memory-broker pods side by side would each ingest events the other's clients miss.
    assert server(helm.template(MINIMAL_VALUES))["spec"]["strategy"] == {"type": "Recreate"}
    redis = {**MINIMAL_VALUES, "broker": {"url": "redis://redis:6379/0"}}
    assert server(helm.template(redis))["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    chosen = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1}}
    assert server(helm.template({**redis, "updateStrategy": chosen}))["spec"]["strategy"] == chosen


def test_notes_tell_how_to_connect_publish_and_limit(helm: Helm, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path / "minimal", MINIMAL_VALUES)
    assert f"kubectl -n {NAMESPACE} port-forward svc/{RELEASE} 8005:8005" in notes
    assert "ws://127.0.0.1:8005/ws" in notes
    assert "allowedOrigins is empty" in notes
    assert 'topic "task-events"' in notes
    assert "POST /v1/events is refused until apiKeys are set" in notes
    assert f'spec.target "{RELEASE}"' in notes

    notes = render_notes(helm, tmp_path / "production", {}, (PRODUCTION_VALUES,))
    assert "wss://sync.example.com/ws" in notes
    assert "allowedOrigins is empty" not in notes
    assert "declaratively through a TaskSyncSubscription" in notes
    assert f"POST http://{RELEASE}.{NAMESPACE}.svc:8005/v1/events" in notes
