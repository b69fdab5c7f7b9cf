"""The origin allowlist for browser handshakes: exact origins and `https://*.example.com`
patterns. This is what stops cross-site WebSocket hijacking (see docs/security.md)."""

from __future__ import annotations

from urllib.parse import urlsplit


class OriginPolicy:
    def __init__(self, allowed: list[str]) -> None:
        self._exact: set[str] = set()
        self._suffixes: list[tuple[str, str]] = []  # (scheme, ".example.com")
        for entry in allowed:
            entry = entry.strip().rstrip("/").lower()
            if not entry:
                continue
            parts = urlsplit(entry)
            if not parts.scheme or not parts.netloc:
                raise ValueError(f"allowed origin {entry!r} must look like https://app.example.com")
            if parts.netloc.startswith("*."):
                self._suffixes.append((parts.scheme, parts.netloc[1:]))
            else:
                self._exact.add(entry)

    @property
    def open(self) -> bool:
        return not self._exact and not self._suffixes

    def allows(self, origin: str | None) -> bool:
        """Whether a handshake with this Origin header may proceed.

        No Origin header means no browser (browsers always send one on WebSocket handshakes),
        so there is no cross-site page to protect against: token auth decides.
        """
        if self.open or origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self._exact:
            return True
        parts = urlsplit(origin)
        # "*.example.com" matches any subdomain depth but not example.com itself.
        return any(
            parts.scheme == scheme and parts.netloc.endswith(suffix) and len(parts.netloc) > len(suffix)
            for scheme, suffix in self._suffixes
        )
