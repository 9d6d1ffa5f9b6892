"""Benchmark server settings: the demo settings plus the bench app; the layer chosen per run.

``BENCH_LAYER`` picks the channel layer: ``memory``, ``redis`` (channels_redis
``RedisChannelLayer``) or ``pubsub`` (``RedisPubSubChannelLayer``). Each keeps its default
configuration (capacity 100, expiry 60 s …): only the Redis address and a prefix unique to the
run are set, so floor, baseline and streamapp meet the layer exactly as a user would.
"""

import os

from demo.settings import *  # noqa: F403
from streamapp.conf import from_environment

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405

LAYER_BACKENDS = {
    "memory": "channels.layers.InMemoryChannelLayer",
    "redis": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}


def bench_channel_layer(kind: str) -> dict:
    if kind not in LAYER_BACKENDS:
        raise ValueError(f"BENCH_LAYER must be one of {', '.join(LAYER_BACKENDS)}, got {kind!r}")
    layer = {"BACKEND": LAYER_BACKENDS[kind]}
    if kind != "memory":
        layer["CONFIG"] = {
            "hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("BENCH_LAYER_PREFIX", "bench"),
        }
    return layer


CHANNEL_LAYERS = {"default": bench_channel_layer(os.environ.get("BENCH_LAYER", "memory"))}

STREAMAPP = {
    "OPEN_ACCESS": True,
    # The load generator subscribes first, then starts the task: nothing may start it earlier.
    "AUTO_START": False,
    # The handshake limits run (their counting is part of a connect, and an anonymous socket's
    # place under the per-address cap part of its memory) but never refuse: every bench socket
    # comes from 127.0.0.1.
    "CONNECTION_RATE": (1_000_000_000, 60.0),
    "ADDRESS_CONNECTION_RATE": (1_000_000_000, 60.0),
    "ANONYMOUS_SOCKETS": 1_000_000_000,
    # STREAMAPP_<NAME> variables: the reconnect storm's web server leaves tasks to a worker.
    **from_environment(),
}

# The benchmark measures streaming, not log output.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("BENCH_LOG_LEVEL", "WARNING")},
}
