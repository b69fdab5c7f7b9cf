"""RateLimitPolicies -> the limits file: pure merging and rendering, no API calls.

Precedence (also in docs/operator.md): every policy that targets an instance takes part. They
are ordered by `spec.priority`, highest first, and on equal priority by name in alphabetical
order (so the outcome never depends on creation order or watch timing). Each limit comes from
the first policy in that order that sets it; a limit no policy sets keeps the service default
from `tasksync.limits.Limits`. The merged result must pass `Limits.check()` as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from tasksync.limits import Limits, LimitsFile, decode_limits_file, encode_limits_file
from tasksync_operator import conditions
from tasksync_operator.model import (
    LIMITS_TARGET_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ObjectRef,
    PolicySource,
    limit_field_names,
)

CONFIGMAP_KEY = "limits.yaml"
CONFIGMAP_SUFFIX = "-limits"

REASON_APPLIED = "LimitsApplied"
REASON_INVALID = "InvalidLimits"


class InvalidLimits(ValueError):
    """The merged limits are not a valid limits file; nothing may be written."""


class Merge(msgspec.Struct, frozen=True, kw_only=True):
    values: dict[str, int | float]
    """The limits some policy sets, by `Limits` field name."""
    provenance: dict[str, str]
    """For each of `values`, the name of the policy it comes from."""
    sources: tuple[str, ...]
    """Every policy that targets the instance, highest precedence first."""


def configmap_name(target: str) -> str:
    return f"{target}{CONFIGMAP_SUFFIX}"


def precedence_order(policies: Iterable[PolicySource]) -> list[PolicySource]:
    return sorted(policies, key=lambda policy: (-policy.spec.priority, policy.ref.name))


def merge_policies(policies: Iterable[PolicySource]) -> Merge:
    ordered = precedence_order(policies)
    values: dict[str, int | float] = {}
    provenance: dict[str, str] = {}
    for policy in ordered:
        for field in limit_field_names():
            value = getattr(policy.spec.limits, field)
            if value is not None and field not in values:
                values[field] = value
                provenance[field] = policy.ref.name
    return Merge(values=values, provenance=provenance, sources=tuple(p.ref.name for p in ordered))


def merged_limits(merge: Merge) -> Limits:
    """The limits in force for `merge`, or InvalidLimits naming the policies involved."""
    try:
        # convert() applies the per-field bounds of Limits; check() the cross-field rules.
        limits = msgspec.convert(merge.values, Limits)
        limits.check()
    except (msgspec.ValidationError, ValueError) as exc:
        origin = ", ".join(f"{field} from {policy}" for field, policy in merge.provenance.items())
        raise InvalidLimits(f"{exc} (merged: {origin or 'defaults only'})") from exc
    return limits


def generation_floor(policies: Iterable[PolicySource]) -> int:
    """The highest limits generation any policy has reported.

    Policies remember what they saw in their status, so even if the ConfigMap is deleted, the
    next file continues above every generation the service may already have loaded.
    """
    return max((int(p.status.get("limitsGeneration") or 0) for p in policies), default=0)


def next_limits_file(merge: Merge, current: LimitsFile | None, floor: int) -> LimitsFile | None:
    """The file to write, or None when nothing should be written.

    Nothing is written when the current file already carries these limits and sources at a
    generation no lower than `floor`, or when no policy targets the instance and there is no
    file yet (an instance without policies runs on defaults and needs no ConfigMap). Otherwise
    the generation moves past both the current file's and `floor`. Raises InvalidLimits.
    """
    limits = merged_limits(merge)
    sources = list(merge.sources)
    if current is None and not sources:
        return None
    if (
        current is not None
        and current.limits == limits
        and current.sources == sources
        and current.generation >= floor
    ):
        return None
    generation = max(current.generation if current is not None else 0, floor) + 1
    return LimitsFile(generation=generation, limits=limits, sources=sources)


def read_limits_file(configmap: Mapping[str, Any] | None) -> LimitsFile | None:
    """The file in a ConfigMap; None if there is none. Raises ValueError if it is unreadable."""
    if configmap is None:
        return None
    raw = (configmap.get("data") or {}).get(CONFIGMAP_KEY)
    if raw is None:
        return None
    return decode_limits_file(raw.encode())


def deployment_owner(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference that hands a limits ConfigMap to its target's Deployment.

    The garbage collector then deletes the ConfigMap with the Deployment (`helm uninstall`).
    Not a controller reference, and blocking nothing: the ConfigMap must never hold up the
    Deployment's deletion, and blocking would need update on the Deployment's finalizers.
    """
    meta = deployment["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": False,
        "blockOwnerDeletion": False,
    }


def lacks_owner(configmap: Mapping[str, Any] | None, owner: Mapping[str, Any] | None) -> bool:
    """True when an existing ConfigMap does not name `owner` (also when it names an earlier
    Deployment of the same name, which has another uid)."""
    if configmap is None or owner is None:
        return False
    references = (configmap.get("metadata") or {}).get("ownerReferences") or []
    return all(reference.get("uid") != owner["uid"] for reference in references)


def render_configmap(
    namespace: str, target: str, limits_file: LimitsFile, *, owner: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The limits ConfigMap; `owner` (from deployment_owner) when the target's Deployment exists."""
    metadata: dict[str, Any] = {
        "name": configmap_name(target),
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, LIMITS_TARGET_LABEL: target},
    }
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {CONFIGMAP_KEY: encode_limits_file(limits_file).decode()},
    }


def policy_status(
    ref: ObjectRef,
    target: str,
    previous: Mapping[str, Any],
    *,
    target_generation: int | None,
    problem: str | None,
    at: str,
) -> dict[str, Any]:
    """The status a policy should report after its target was reconciled.

    `previous` is its current status; `target_generation` the limits generation in force (None
    if no file was ever written); `problem` why the latest merge was refused, None if in force.
    """
    if problem is None:
        condition = conditions.Condition(
            type=conditions.READY,
            status="True",
            reason=REASON_APPLIED,
            message=f"limits generation {target_generation} is in force",
            observed_generation=ref.generation,
        )
    else:
        kept = f"; generation {target_generation} stays in force" if target_generation else ""
        condition = conditions.Condition(
            type=conditions.READY,
            status="False",
            reason=REASON_INVALID,
            message=f"merged limits refused: {problem}{kept}",
            observed_generation=ref.generation,
        )
    status: dict[str, Any] = {
        "observedGeneration": ref.generation,
        "configMapName": configmap_name(target),
        "conditions": conditions.with_condition(previous.get("conditions") or [], condition, at=at),
    }
    if target_generation is not None:
        status["limitsGeneration"] = target_generation
    return status
