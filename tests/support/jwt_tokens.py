"""Keys, tokens and a JWKS server for the auth tests."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SECRET = "test-secret-that-is-long-enough-for-hs256!"
AUDIENCE = "tasksync"
ISSUER = "https://issuer.test"


class RsaKey:
    def __init__(self, kid: str = "key-1") -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, Any]:
        key = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**key, "kid": self.kid, "alg": "RS256", "use": "sig"}


def jwt_env(jwks: JwksServer, **extra: str) -> dict[str, str]:
    """The environment of a service that takes both HS256 (the shared secret) and RS256 (the
    JWKS server) tokens for AUDIENCE from ISSUER, with no leeway so expiry is exact."""
    return {
        "TASKSYNC_JWT_SECRET": SECRET,
        "TASKSYNC_JWT_JWKS_URL": jwks.url,
        "TASKSYNC_JWT_AUDIENCE": AUDIENCE,
        "TASKSYNC_JWT_ISSUER": ISSUER,
        "TASKSYNC_JWT_LEEWAY": "0",
        **extra,
    }


def claims(sub: str | None = "alice", *, ttl: float = 300, **extra: Any) -> dict[str, Any]:
    now = time.time()
    base: dict[str, Any] = {"aud": AUDIENCE, "iss": ISSUER, "iat": int(now), "exp": now + ttl}
    if sub is not None:
        base["sub"] = sub
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def rs256(payload: dict[str, Any], key: RsaKey) -> str:
    return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": key.kid})


def unsigned(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, None, algorithm="none")


class JwksServer:
    """Serves {"keys": [...]} on a free loopback port and counts the fetches."""

    def __init__(self, keys: list[RsaKey]) -> None:
        self.keys = keys
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps({"keys": [k.jwk() for k in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
