"""The loopback origin lives in the package (the demo uses it too)."""

from withcache.origin import Origin, Route, Seen

__all__ = ["Origin", "Route", "Seen"]
