"""The few Kubernetes API calls the handlers make, over kubernetes_asyncio, returning plain dicts.

They send plain dicts too, which the client sends as they are: its stubs want a model such as
V1ConfigMap for a built-in kind's body and leave out `_content_type`, hence the `type: ignore`s.

kopf watches and patches the objects it handles; everything else (Dapr Subscriptions, the
limits ConfigMaps and the Deployments that own them, the status of sibling policies) goes
through here. Credentials come from one
place, `load_configuration`, and kopf logs in with the same ones (see handlers.login).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Awaitable
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync_operator.model import (
    DAPR_GROUP,
    DAPR_PLURAL,
    DAPR_VERSION,
    GROUP,
    MANAGED_BY,
    VERSION,
    ObjectRef,
)

MERGE_PATCH = "application/merge-patch+json"


class DaprNotInstalled(Exception):
    """The dapr.io/v2alpha1 Subscription API is not served by this cluster."""


async def load_configuration(kubeconfig: str | None) -> client.Configuration:
    """In-cluster service account when running in a pod, else a kubeconfig file.

    An explicit `kubeconfig` wins; without one, $KUBECONFIG or ~/.kube/config as kubectl does.
    """
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        await config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration, persist_config=False
        )
    return configuration


async def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """The same credentials in kopf's terms."""
    if configuration.host is None:
        raise ValueError("the Kubernetes configuration names no API server")
    authorization = await configuration.get_api_key_with_prefix("BearerToken") or ""
    scheme, _, token = authorization.partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _not_found(exc: ApiException) -> bool:
    return exc.status == 404


async def subscriptions_served(api: client.ApiClient) -> bool:
    try:
        resources = await client.CustomObjectsApi(api).get_api_resources(DAPR_GROUP, DAPR_VERSION)
    except ApiException as exc:
        if _not_found(exc):
            return False
        raise
    return any(resource.name == DAPR_PLURAL for resource in resources.resources)


async def _raise_if_dapr_missing(api: client.ApiClient) -> None:
    # A 404 means either "no such object" or "no such resource type"; discovery tells which.
    if not await subscriptions_served(api):
        raise DaprNotInstalled(f"the {DAPR_GROUP}/{DAPR_VERSION} {DAPR_PLURAL} API is not served")


async def read_subscription(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await client.CustomObjectsApi(api).get_namespaced_custom_object(
            DAPR_GROUP, DAPR_VERSION, namespace, DAPR_PLURAL, name
        )
    except ApiException as exc:
        if _not_found(exc):
            await _raise_if_dapr_missing(api)
            return None
        raise


async def create_subscription(api: client.ApiClient, body: dict[str, Any]) -> None:
    try:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            DAPR_GROUP, DAPR_VERSION, body["metadata"]["namespace"], DAPR_PLURAL, body
        )
    except ApiException as exc:
        if _not_found(exc):
            await _raise_if_dapr_missing(api)
        raise


async def replace_subscription(api: client.ApiClient, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    await client.CustomObjectsApi(api).replace_namespaced_custom_object(
        DAPR_GROUP, DAPR_VERSION, meta["namespace"], DAPR_PLURAL, meta["name"], body
    )


async def _read_or_none(api: client.ApiClient, read: Awaitable[Any]) -> dict[str, Any] | None:
    """The object a read returns, as a plain dict; None if it does not exist."""
    try:
        found = await read
    except ApiException as exc:
        if _not_found(exc):
            return None
        raise
    return api.sanitize_for_serialization(found)


async def read_configmap(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return await _read_or_none(api, client.CoreV1Api(api).read_namespaced_config_map(name, namespace))


async def read_deployment(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return await _read_or_none(api, client.AppsV1Api(api).read_namespaced_deployment(name, namespace))


async def write_configmap(
    api: client.ApiClient, body: dict[str, Any], *, resource_version: str | None
) -> None:
    """Create the ConfigMap, or replace it only if it is still at `resource_version`.

    The precondition turns a concurrent writer into a 409 (retried by kopf) instead of a lost
    update that could move the limits generation backwards.
    """
    core = client.CoreV1Api(api)
    meta = body["metadata"]
    if resource_version is None:
        await core.create_namespaced_config_map(meta["namespace"], body)  # type: ignore[arg-type]
    else:
        guarded = {**body, "metadata": {**meta, "resourceVersion": resource_version}}
        await core.replace_namespaced_config_map(meta["name"], meta["namespace"], guarded)  # type: ignore[arg-type]


async def patch_status(
    api: client.ApiClient, plural: str, namespace: str, name: str, status: dict[str, Any]
) -> bool:
    """Merge `status` into an object's status subresource; False if the object is gone."""
    try:
        await client.CustomObjectsApi(api).patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            GROUP, VERSION, namespace, plural, name, {"status": status}, _content_type=MERGE_PATCH
        )
    except ApiException as exc:
        if _not_found(exc):
            return False
        raise
    return True


async def post_event(api: client.ApiClient, ref: ObjectRef, *, type: str, reason: str, message: str) -> None:
    """A Kubernetes event about `ref`, for code outside kopf's handlers (kopf.event() works only
    inside them)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.CoreV1Api(api).create_namespaced_event(
        ref.namespace,
        {  # type: ignore[arg-type]
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "namespace": ref.namespace,
                "name": ref.name,
                "uid": ref.uid,
            },
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": MANAGED_BY},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        },
    )
