"""withcache: an operator-curated artifact cache served as a static tree by nginx."""

__version__ = "0.1.0"
