"""TaskSync: real-time task sync over WebSockets. See docs/architecture.md for the module map."""

from .hookspecs import hookimpl

__all__ = ["hookimpl"]
