"""Settings: one typed Struct, filled from defaults, a config file, TASKSYNC_* variables and
command-line flags, in that order of precedence (later wins).

Each field's description is its `--help` text and its line in docs/configuration.md, so a setting
is documented in exactly one place.
"""

from __future__ import annotations

import ipaddress
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

ENV_PREFIX = "TASKSYNC_"


def _doc(text: str, **constraints: Any) -> msgspec.Meta:
    return msgspec.Meta(description=text, **constraints)


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: Annotated[str, _doc("Address to listen on.")] = "127.0.0.1"
    port: Annotated[int, _doc("Port to listen on.", ge=0, le=65535)] = 8005
    dev: Annotated[
        bool,
        _doc(
            "Development mode: the user comes from the user_id query parameter, /v1/events is open "
            "when no API key is set, the demo app is served, and SIGTERM or Ctrl-C stops the service at "
            "once (see drain_window). Never in production."
        ),
    ] = False
    demo_db: Annotated[
        str,
        _doc(
            "SQLite file of the demo app's tasks API (development mode only), kept across restarts; "
            "empty: a new database for each run, removed when the service stops."
        ),
    ] = ""
    broker: Annotated[
        str,
        _doc(
            "Broker: 'memory' (one process); redis://host:port/db, rediss:// (TLS) or unix:// for one Redis; "
            "redis+cluster://host:port[,host:port...] or rediss+cluster:// for a Redis Cluster (many replicas)."
        ),
    ] = "memory"
    redis_wait_replicas: Annotated[
        int,
        _doc(
            "Redis replicas that must have each publish before it is acknowledged (WAIT); fewer within "
            "redis_wait_timeout: the events are refused (503, Dapr RETRY) and their retry is deduplicated. "
            "0: acknowledged once the master has them (asynchronous replication).",
            ge=0,
        ),
    ] = 0
    redis_wait_timeout: Annotated[
        float, _doc("Seconds a publish waits for redis_wait_replicas replicas before it is refused.", gt=0)
    ] = 0.5
    heartbeat_interval: Annotated[float, _doc("Seconds between ping frames to each socket.", gt=0)] = 25.0
    keepalive_interval: Annotated[
        float,
        _doc(
            "Seconds between the WebSocket ping control frames sent to each socket, which every client's "
            "WebSocket stack answers by itself: how the server finds a peer that vanished without closing "
            "(a laptop shut, a network gone). 0: none, and such a connection is only dropped once its "
            "writes stall (send_timeout) or TCP gives up.",
            ge=0,
        ),
    ] = 20.0
    keepalive_timeout: Annotated[
        float,
        _doc(
            "Seconds a peer has to answer a keepalive ping before its connection is closed (1011) and "
            'counted in tasksync_transport_cutoffs{reason="keepalive_timeout"}.',
            gt=0,
        ),
    ] = 20.0
    gc_full_collection_interval: Annotated[
        float,
        _doc(
            "Seconds at least between two full collections of Python's garbage collector, each of which "
            "stops the event loop to walk every live object (0.15-0.25 s with 5,000 sockets); Python still "
            "decides when one is due. 0: Python's own pacing, which runs one each time the long-lived "
            "objects grow by a quarter (8 or 9 while 5,000 sockets reconnect).",
            ge=0,
        ),
    ] = 30.0
    history_size: Annotated[int, _doc("Events kept per user for resume.", ge=1)] = 1000
    history_ttl: Annotated[float, _doc("Seconds an event stays in a user's history.", gt=0)] = 3600.0
    dedupe_window: Annotated[float, _doc("Seconds within which a repeated event id is delivered only once.", gt=0)] = (
        600.0
    )
    outbox_size: Annotated[
        int, _doc("Frames queued per connection before it counts as a slow consumer and is closed (1013).", ge=1)
    ] = 1000
    max_concurrent_replays: Annotated[
        int,
        _doc(
            "Client resumes that may read history at once in this process; more wait their turn, so a "
            "resume storm neither floods the broker nor crowds out other handshakes.",
            ge=1,
        ),
    ] = 16
    send_timeout: Annotated[
        float,
        _doc(
            "Seconds a socket's writes may stall (peer not reading at all) before the connection is aborted, "
            "authenticated or not.",
            gt=0,
        ),
    ] = 10.0
    drain_window: Annotated[
        float,
        _doc(
            "On SIGTERM, seconds over which live sockets are closed with 1012, spread evenly; when not set in "
            "development mode, 0: a developer's server stops at once.",
            ge=0,
        ),
    ] = 10.0
    drain_grace: Annotated[
        float,
        _doc(
            "On SIGTERM, seconds until the process exits whatever is left; keep below terminationGracePeriodSeconds.",
            gt=0,
        ),
    ] = 25.0
    max_body_bytes: Annotated[int, _doc("Largest HTTP request body accepted on the ingest routes.", ge=1024)] = (
        1_048_576
    )
    max_frame_bytes: Annotated[
        int, _doc("Largest client WebSocket frame accepted; larger ones close the connection with 1009.", ge=128)
    ] = 65_536
    auth: Annotated[
        str,
        _doc(
            "Auth plugin by entry-point name (dev, jwt, header, or a third party's); empty: 'dev' in development mode."
        ),
    ] = ""
    notifiers: Annotated[
        list[str], _doc("Notification plugins to enable, by entry-point name (comma-separated): toast, webhook, log.")
    ] = msgspec.field(default_factory=lambda: ["toast"])
    plugin_timeout: Annotated[
        float, _doc("Seconds a plugin hook may take before the call is abandoned and counted as an error.", gt=0)
    ] = 2.0
    allowed_origins: Annotated[
        list[str],
        _doc("Browser origins allowed to open /ws (exact, or https://*.example.com patterns); empty: any origin."),
    ] = []
    handshake_timeout: Annotated[
        float, _doc("Seconds a client may take to send a request's headers before it is cut off (slowloris).", gt=0)
    ] = 10.0
    max_request_head_bytes: Annotated[
        int,
        _doc(
            "Largest HTTP request head (request line and headers) accepted on any route; a larger one is "
            "answered 431 and the connection closed.",
            ge=4096,
        ),
    ] = 32_768
    body_timeout: Annotated[
        float,
        _doc(
            "Seconds a client may take to send a request's body once its headers are in before the connection "
            "is closed (408 if nothing was answered yet).",
            gt=0,
        ),
    ] = 10.0
    auth_message_timeout: Annotated[
        float, _doc("Seconds a socket may stay unauthenticated waiting for its first 'auth' frame.", gt=0)
    ] = 5.0
    token_query_param: Annotated[
        bool, _doc("Also accept ?token= on the handshake (it leaks into access logs; redacted from TaskSync's own).")
    ] = False
    limits_file: Annotated[
        str, _doc("Limits file (YAML/JSON, schema tasksync.io/limits/v1) to load and watch; empty: built-in limits.")
    ] = ""
    limits_poll_interval: Annotated[float, _doc("Seconds between checks of the limits file for changes.", gt=0)] = 2.0
    api_keys: Annotated[
        list[str], _doc("API keys accepted on POST /v1/events (comma-separated in the environment).")
    ] = []
    dapr_subscribe: Annotated[
        bool, _doc("Answer GET /dapr/subscribe (programmatic subscription); off when Subscriptions are declarative.")
    ] = True
    dapr_pubsub_name: Annotated[str, _doc("Dapr pub/sub component to subscribe to.")] = "pubsub"
    dapr_topic: Annotated[str, _doc("Topic carrying task events.")] = "task-events"
    dapr_route: Annotated[str, _doc("Path Dapr delivers events to.", pattern=r"^/[A-Za-z0-9/_\-.]*$")] = (
        "/dapr/task-events"
    )
    dapr_dead_letter_topic: Annotated[str, _doc("Dead-letter topic for events Dapr gives up on (empty: none).")] = ""
    dapr_bulk_subscribe: Annotated[bool, _doc("Ask Dapr for bulk delivery in the programmatic subscription.")] = False
    dapr_bulk_max_messages: Annotated[int, _doc("Bulk subscribe: most events per delivery.", ge=1)] = 100
    dapr_bulk_max_await_ms: Annotated[int, _doc("Bulk subscribe: longest wait before a partial batch.", ge=1)] = 40
    dapr_api_token: Annotated[
        str,
        _doc(
            "The Dapr sidecar's APP_API_TOKEN: Dapr requests must carry it in the dapr-api-token header "
            "(else 401). Unset outside development mode, the Dapr routes refuse every request (403)."
        ),
    ] = ""
    forwarded_allow_ips: Annotated[
        list[str],
        _doc(
            "Proxies (addresses or CIDRs) whose X-Forwarded-For and X-Forwarded-Proto name the client in "
            "logs; empty: forwarding headers are ignored. Never used to authenticate: header auth checks "
            "the TCP peer."
        ),
    ] = []
    tls_certfile: Annotated[str, _doc("PEM certificate to terminate TLS (wss://) in the service itself.")] = ""
    tls_keyfile: Annotated[str, _doc("PEM private key for tls_certfile.")] = ""
    log_level: Annotated[str, _doc("Log level: debug, info, warning, error.")] = "info"
    debug_endpoints: Annotated[
        bool,
        _doc(
            "Serve GET /debug/heap (live objects after a full garbage collection, for leak hunting). "
            "It stalls the event loop while it counts: off in production unless diagnosing."
        ),
    ] = False

    def __post_init__(self) -> None:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("tls_certfile and tls_keyfile must be given together")
        if self.drain_window > self.drain_grace:
            raise ValueError("drain_window must not exceed drain_grace")
        for forwarder in self.forwarded_allow_ips:
            try:
                ipaddress.ip_network(forwarder, strict=False)
            except ValueError:
                raise ValueError(f"forwarded_allow_ips: {forwarder!r} is not an address or CIDR") from None


class SettingDoc(msgspec.Struct, frozen=True):
    name: str
    type: Any
    default: Any
    description: str


def setting_docs() -> list[SettingDoc]:
    """Every setting with its plain type, default and description, in declaration order."""
    plain_types = typing.get_type_hints(Settings)
    docs = []
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        description = (getattr(f.type, "extra_json_schema", None) or {}).get("description", "")
        default = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
        docs.append(SettingDoc(f.name, plain_types[f.name], default, description))
    return docs


def env_values(struct_type: type[msgspec.Struct], environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """The fields of `struct_type` set as `<prefix><FIELD>` variables in `environ`, still text
    for `msgspec.convert(..., strict=False)` to type; a list field is comma-separated. The
    service's settings and every plugin's settings are read this one way."""
    values: dict[str, Any] = {}
    types = typing.get_type_hints(struct_type)
    for name in struct_type.__struct_fields__:
        raw = environ.get(prefix + name.upper())
        if raw is None:
            continue
        if typing.get_origin(types[name]) is list:
            values[name] = [item.strip() for item in raw.split(",") if item.strip()]
        else:
            values[name] = raw
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML, JSON or TOML file with the same keys as the settings."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        data = msgspec.toml.decode(raw) if path.suffix == ".toml" else msgspec.yaml.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(f"config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping of settings")
    return data


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Merge defaults < config file < environment < overrides and validate the result.

    Environment values are strings; msgspec's `strict=False` converts them to each field's type.
    Raises ValueError naming the offending setting.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        merged.update(load_config_file(config_file))
    merged.update(env_values(Settings, environ, ENV_PREFIX))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid setting: {exc}") from exc
    if settings.dev and "drain_window" not in merged:
        # Nobody waits for a developer's server to hand its sockets over; a window set explicitly
        # brings the drain back, to try it in development.
        settings = msgspec.structs.replace(settings, drain_window=0.0)
    return settings
