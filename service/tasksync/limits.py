"""The limits file: the versioned schema shared by the service and the operator.

The operator renders this file from RateLimitPolicy resources into a ConfigMap; the service
loads it at start and reloads it when it changes. One schema, one module, so the two sides can
never disagree about a field name.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

LIMITS_API_VERSION: Final = "tasksync.io/limits/v1"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class Limits(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Every limit the service enforces. Defaults are what runs with no limits file."""

    max_connections_per_user: PositiveInt = 20
    max_connections_per_process: PositiveInt = 10_000
    inbound_messages_per_second: PositiveFloat = 10.0
    inbound_burst: PositiveInt = 20
    outbound_events_per_second_per_user: PositiveFloat = 100.0
    outbound_burst_per_user: PositiveInt = 200
    # Events a user's resumes may replay from history, per process. The burst covers every
    # connection of a user replaying a full history at once (20 x 1,000 by default), so only a
    # client that resumes over and over meets the rate.
    replay_events_per_second_per_user: PositiveFloat = 1_000.0
    replay_burst_per_user: PositiveInt = 20_000
    publish_requests_per_second_per_key: PositiveFloat = 1_000.0
    publish_burst_per_key: PositiveInt = 2_000
    max_frame_bytes: PositiveInt = 64 * 1024

    def check(self) -> None:
        """Reject combinations that each field's bounds cannot express on their own."""
        if self.inbound_burst < self.inbound_messages_per_second:
            raise ValueError("inbound_burst must be at least inbound_messages_per_second")
        if self.outbound_burst_per_user < self.outbound_events_per_second_per_user:
            raise ValueError(
                "outbound_burst_per_user must be at least outbound_events_per_second_per_user"
            )
        if self.replay_burst_per_user < self.replay_events_per_second_per_user:
            raise ValueError("replay_burst_per_user must be at least replay_events_per_second_per_user")
        if self.publish_burst_per_key < self.publish_requests_per_second_per_key:
            raise ValueError(
                "publish_burst_per_key must be at least publish_requests_per_second_per_key"
            )
        if self.max_connections_per_user > self.max_connections_per_process:
            raise ValueError("max_connections_per_user cannot exceed max_connections_per_process")


class LimitsFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The file on disk: a schema version, a generation that only grows, and the limits."""

    apiVersion: Literal["tasksync.io/limits/v1"] = LIMITS_API_VERSION
    generation: Annotated[int, msgspec.Meta(ge=0)] = 0
    limits: Limits = Limits()
    # Which policies produced this file (operator-written; informational only).
    sources: list[str] = []


def decode_limits_file(raw: bytes) -> LimitsFile:
    """Parse and validate a limits file, YAML or JSON (JSON is YAML). Raises ValueError."""
    try:
        parsed = msgspec.yaml.decode(raw, type=LimitsFile)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"invalid limits file: {exc}") from exc
    parsed.limits.check()
    return parsed


def encode_limits_file(limits_file: LimitsFile) -> bytes:
    """Render a limits file as YAML, the form the operator writes into its ConfigMap."""
    limits_file.limits.check()
    return msgspec.yaml.encode(limits_file)
