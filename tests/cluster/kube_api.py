"""A small synchronous client for the cluster's API: JSON over HTTPS with the admin's client
certificate. The tests need a handful of verbs on plain manifests, and a fixture's teardown must
not depend on an event loop."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from tests.cluster.pki import KeyPair


class KubeApi:
    def __init__(self, server: str, ca_cert: str, client: KeyPair) -> None:
        self.server = server
        tls = ssl.create_default_context(cafile=ca_cert)
        tls.load_cert_chain(client.cert, client.key)
        self._http = httpx.Client(base_url=server, verify=tls, timeout=30)

    def close(self) -> None:
        self._http.close()

    def _checked(self, response: httpx.Response) -> dict[str, Any]:
        if response.is_error:
            raise httpx.HTTPStatusError(
                f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}",
                request=response.request,
                response=response,
            )
        return response.json()

    def get(self, path: str, **params: str) -> dict[str, Any]:
        return self._checked(self._http.get(path, params=params))

    def exists(self, path: str) -> bool:
        response = self._http.get(path)
        if response.status_code == 404:
            return False
        self._checked(response)
        return True

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        return self.get(path, **params)["items"]

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._checked(self._http.post(path, json=body))

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A strategic merge patch, as `kubectl patch` sends by default."""
        headers = {"content-type": "application/strategic-merge-patch+json"}
        return self._checked(self._http.patch(path, json=body, headers=headers))

    def delete(self, path: str, **params: str) -> None:
        response = self._http.delete(path, params=params)
        if response.status_code != 404:
            self._checked(response)

    def text(self, path: str) -> str:
        """A non-JSON resource, such as /readyz."""
        response = self._http.get(path)
        response.raise_for_status()
        return response.text
