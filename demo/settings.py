"""Demo settings, and the example a deployment copies.

With no environment variables this is the embedded default: SQLite and the in-memory channel
layer, tasks run inside the daphne process. ``DATABASE_URL`` switches to PostgreSQL and
``REDIS_URL`` to ``channels_redis`` (``STREAMAPP_LAYER=pubsub`` picks its pub/sub layer).
"""

import os
from pathlib import Path

import dj_database_url

from streamapp.conf import from_environment

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "streamapp-demo-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "streamapp",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "demo.urls"
ASGI_APPLICATION = "asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def database_from_environment():
    url = os.environ.get("DATABASE_URL")
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("STREAMAPP_SQLITE", str(BASE_DIR / "db.sqlite3")),
            # IMMEDIATE transactions and a busy timeout keep several threads from deadlocking.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    database = dj_database_url.parse(url, conn_max_age=0)
    # A database that stops answering fails a connect in seconds instead of hanging a worker.
    database.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    database["TEST"] = {"NAME": os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")}
    return database


def channel_layer_from_environment():
    url = os.environ.get("REDIS_URL")
    if not url:
        return {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    kind = os.environ.get("STREAMAPP_LAYER", "redis")
    backend = {
        "redis": "channels_redis.core.RedisChannelLayer",
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    }[kind]
    config = {"hosts": [url], "prefix": os.environ.get("STREAMAPP_LAYER_PREFIX", "asgi")}
    return {"BACKEND": backend, "CONFIG": config}


def cache_from_environment():
    """Redis when ``REDIS_URL`` is set, so rate-limit counts are shared by every process."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    prefix = os.environ.get("STREAMAPP_LAYER_PREFIX", "streamapp")
    return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
            "KEY_PREFIX": prefix}


DATABASES = {"default": database_from_environment()}
CHANNEL_LAYERS = {"default": channel_layer_from_environment()}
CACHES = {"default": cache_from_environment()}

STREAMAPP = {
    # The demo lets anyone watch and cancel; a real site keeps the default (False).
    "OPEN_ACCESS": True,
    # STREAMAPP_<NAME> environment variables, e.g. STREAMAPP_RUN_TASKS=0 for web processes
    # that only serve sockets while `manage.py runtasks` workers execute the tasks.
    **from_environment(),
}

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "streamapp": {
            "handlers": ["console"], "level": os.environ.get("STREAMAPP_LOG_LEVEL", "INFO")
        }
    },
}
