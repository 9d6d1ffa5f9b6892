"""The optional parts of streamapp and the pip extras that bring them.

Every user needs django, channels and daphne; Redis, PostgreSQL and Prometheus support come with
``streamapp[redis]``, ``streamapp[postgres]`` and ``streamapp[metrics]`` (``streamapp[all]``:
all three). Using one without its extra fails with a message that names the extra.
"""

from __future__ import annotations

import importlib.util

from .exceptions import MissingExtra

# extra -> the modules it brings (any one of them is enough)
EXTRAS: dict[str, tuple[str, ...]] = {
    "redis": ("channels_redis",),
    "postgres": ("psycopg", "psycopg2"),
    "metrics": ("prometheus_client",),
}


def installed(extra: str) -> bool:
    return any(importlib.util.find_spec(name) is not None for name in EXTRAS[extra])


def missing(extra: str, what: str) -> str:
    """The sentence a user reads when ``what`` needs ``extra`` and it is not installed."""
    return f"{what} needs streamapp's {extra!r} extra: pip install 'streamapp[{extra}]'"


def require(extra: str, what: str) -> None:
    if not installed(extra):
        raise MissingExtra(missing(extra, what))
