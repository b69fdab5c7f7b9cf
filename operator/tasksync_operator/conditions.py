"""`status.conditions` in the shape Kubernetes tooling expects (metav1.Condition)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

READY = "Ready"


class Condition(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    observed_generation: int
    last_transition_time: str = ""


def now() -> str:
    """RFC 3339 at second precision, the format of metav1.Time."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_condition(existing: Iterable[Mapping[str, Any]], new: Condition, *, at: str) -> list[dict[str, Any]]:
    """Return `existing` with `new` replacing the condition of the same type.

    lastTransitionTime moves only when the status flips: it answers "since when has this been
    Ready/not Ready", which a reason or message change does not affect.
    """
    result: list[dict[str, Any]] = []
    transition = at
    for condition in existing:
        if condition.get("type") == new.type:
            if condition.get("status") == new.status and condition.get("lastTransitionTime"):
                transition = condition["lastTransitionTime"]
            continue
        result.append(dict(condition))
    result.append(msgspec.to_builtins(msgspec.structs.replace(new, last_transition_time=transition)))
    return sorted(result, key=lambda condition: condition["type"])
