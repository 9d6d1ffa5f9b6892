"""One test per wiring and settings check (streamapp.checks.settings, .wiring): each triggered
by the misconfiguration it exists for, asserting the text ``manage.py check`` prints."""

from __future__ import annotations

import sys

import pytest
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core import checks
from django.test import override_settings

from consumers.routing import websocket_urlpatterns
from streamapp import extras
from streamapp.asgi import StreamAppMiddlewareStack, lifespan

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def report(*ids: str) -> list[str]:
    """What ``manage.py check`` prints for these check ids (message, hint and id)."""
    return [str(m) for m in checks.run_checks() if m.id in ids]


def test_the_projects_own_wiring_passes_every_check():
    assert [m for m in checks.run_checks() if m.id.startswith("streamapp.")] == []


@pytest.mark.parametrize("layers", [None, {}, {"default": {}}])
def test_no_channel_layer_is_an_error(layers):
    with override_settings(CHANNEL_LAYERS=layers):
        [text] = report("streamapp.E010")
    assert text.startswith(
        "?: (streamapp.E010) CHANNEL_LAYERS has no 'default' layer: a task's events never reach "
        "its sockets live"
    )
    assert "HINT: One process: CHANNEL_LAYERS = {\"default\": {\"BACKEND\": " \
           "\"channels.layers.InMemoryChannelLayer\"}}" in text


def test_a_redis_layer_without_the_redis_extra(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "redis", ("no_such_module_here",))
    redis_layer = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=redis_layer):
        assert report("streamapp.E011") == [
            "?: (streamapp.E011) CHANNEL_LAYERS backend channels_redis.core.RedisChannelLayer "
            "needs streamapp's 'redis' extra: pip install 'streamapp[redis]'"
        ]


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_postgresql_and_a_redis_cache_without_their_extras(monkeypatch, settings):
    monkeypatch.setitem(extras.EXTRAS, "postgres", ("no_such_module_here",))
    monkeypatch.setitem(extras.EXTRAS, "redis", ("no_such_module_here",))
    databases = {**settings.DATABASES, "reports": {"ENGINE": "django.db.backends.postgresql"}}
    caches = {**settings.CACHES,
              "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}}
    with override_settings(DATABASES=databases, CACHES=caches):
        found = [text for text in report("streamapp.E012", "streamapp.E013")
                 if "['reports']" in text or "['shared']" in text]  # not the run's own services
        assert found == [
            "?: (streamapp.E012) DATABASES['reports'] (PostgreSQL) needs streamapp's 'postgres' "
            "extra: pip install 'streamapp[postgres]'",
            "?: (streamapp.E013) CACHES['shared'] (Django's RedisCache) needs streamapp's "
            "'redis' extra: pip install 'streamapp[redis]'",
        ]


def test_a_multiprocess_metrics_dir_that_is_not_a_directory(monkeypatch, tmp_path):
    missing = tmp_path / "not-created"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    assert report("streamapp.E014") == [
        f"?: (streamapp.E014) PROMETHEUS_MULTIPROC_DIR='{missing}' is not a directory: create "
        "it before the processes start (prometheus-client's multiprocess mode keeps its files "
        "there), or unset it"
    ]


def test_a_multiprocess_metrics_dir_without_the_metrics_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(extras.EXTRAS, "metrics", ("no_such_module_here",))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert report("streamapp.W015") == [
        "?: (streamapp.W015) PROMETHEUS_MULTIPROC_DIR (Prometheus metrics) needs streamapp's "
        "'metrics' extra: pip install 'streamapp[metrics]'"
    ]


@pytest.mark.parametrize("typo, meant", [("LEASE_SECOND", "LEASE_SECONDS"),
                                          ("OPEN_ACESS", "OPEN_ACCESS")])
def test_an_unknown_key_names_the_closest_valid_one(typo, meant):
    with override_settings(STREAMAPP={typo: 1}):
        [text] = report("streamapp.E031")
    assert text.startswith(
        f"?: (streamapp.E031) STREAMAPP has an unknown key '{typo}': did you mean '{meant}'?"
    )


def test_an_unknown_key_like_no_valid_one():
    with override_settings(STREAMAPP={"COLOUR": "blue"}):
        [text] = report("streamapp.E031")
    assert text.startswith("?: (streamapp.E031) STREAMAPP has an unknown key 'COLOUR'\n")


@pytest.mark.parametrize("name, value, why", [
    ("RUN_TASKS", "no", "must be True or False, not str 'no' (default: True)"),
    ("LEASE_SECONDS", "30", "must be a number, not str '30' (default: 30.0)"),
    ("WORKER_CONCURRENCY", 2.5, "must be an integer, not float 2.5 (default: 10)"),
    ("MAX_SUBSCRIPTIONS", True, "must be an integer, not bool True (default: 100)"),
    ("DEFAULT_TIMEOUT", "1h", "must be a number or None, not str '1h' (default: None)"),
    ("SLOW_CLIENT_SECONDS", 0, "must be above zero, not 0 (default: 30.0)"),
    ("SHUTDOWN_TIMEOUT", -1, "must be zero or more, not -1 (default: 10.0)"),
    ("LEASE_SECONDS", None, "must not be None (default: 30.0)"),
])
def test_a_value_of_the_wrong_type_or_range(name, value, why):
    with override_settings(STREAMAPP={name: value}):
        assert report("streamapp.E032") == [f"?: (streamapp.E032) STREAMAPP['{name}'] {why}"]


def test_values_of_the_right_type_pass():
    good = {"RUN_TASKS": False, "LEASE_SECONDS": 12, "DEFAULT_TIMEOUT": None,
            "SHUTDOWN_TIMEOUT": 0, "TOKEN_AUTHENTICATOR": None, "HEARTBEAT_SECONDS": 2.5}
    with override_settings(STREAMAPP=good):
        assert report("streamapp.E031", "streamapp.E032") == []


def test_streamapp_that_is_not_a_dict():
    with override_settings(STREAMAPP=[("LEASE_SECONDS", 30)]):
        assert report("streamapp.E030") == [
            "?: (streamapp.E030) STREAMAPP must be a dict of settings, not list\n"
            "\tHINT: STREAMAPP = {\"LEASE_SECONDS\": 30} (every key is optional)."
        ]


def test_an_asgi_application_that_cannot_be_imported():
    with override_settings(ASGI_APPLICATION="asgi_nowhere.application"):
        [text] = report("streamapp.E040")
    assert text.startswith("?: (streamapp.E040) ASGI_APPLICATION = 'asgi_nowhere.application' "
                           "cannot be imported: No module named 'asgi_nowhere'")
    assert text.endswith("HINT: In a startproject layout it is 'tests.asgi.application'.")


# The Channels tutorial's wiring, without streamapp's stack and without lifespan.
tutorial_application = ProtocolTypeRouter({"websocket": URLRouter(websocket_urlpatterns)})
wired_application = ProtocolTypeRouter({
    "websocket": StreamAppMiddlewareStack(URLRouter(websocket_urlpatterns)),
    "lifespan": lifespan,
})


@override_settings(ASGI_APPLICATION=f"{__name__}.tutorial_application")
def test_websockets_that_miss_the_stack_and_no_lifespan_are_warned():
    stack, life = report("streamapp.W041", "streamapp.W042")
    assert stack.startswith(
        f"?: (streamapp.W041) {__name__}.tutorial_application: WebSocket connections do not "
        "pass through streamapp.asgi.StreamAppMiddlewareStack: bearer tokens are not read"
    )
    assert 'HINT: In asgi.py: "websocket": StreamAppMiddlewareStack(URLRouter(' in stack
    assert life.startswith(
        f"?: (streamapp.W042) {__name__}.tutorial_application routes no 'lifespan': under "
        "uvicorn or hypercorn nothing closes the sockets or drains running tasks at shutdown"
    )


@override_settings(ASGI_APPLICATION=f"{__name__}.wired_application")
def test_the_public_wiring_is_recognised():
    assert report("streamapp.W041", "streamapp.W042") == []


def test_runserver_without_daphne_first(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver"])
    monkeypatch.setattr("streamapp.checks.wiring.get_commands",
                        lambda: {"runserver": "django.contrib.staticfiles"})
    assert report("streamapp.W043") == [
        "?: (streamapp.W043) runserver is Django's own, which serves no WebSocket: every ws/ "
        "request gets 404.\n\tHINT: Put 'daphne' first in INSTALLED_APPS (before "
        "django.contrib.staticfiles), or serve asgi.py with daphne or uvicorn."
    ]
    monkeypatch.undo()
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver"])
    assert report("streamapp.W043") == []  # the test settings list daphne first


def test_a_channels_router_that_no_longer_says_no_route(monkeypatch):
    monkeypatch.setattr("streamapp.adapters.routing.NO_ROUTE", "Something else")
    [text] = report("streamapp.W022")
    assert text.startswith("?: (streamapp.W022) streamapp cannot tell channels' \"no route\" "
                           "from a consumer's error")


@pytest.mark.parametrize("adapter, probe, check_id, feature", [
    ("daphne", "probe", "streamapp.W020", "slow-client protection"),
    ("rediscache", "probe", "streamapp.W021", "slower public cache API"),
    ("routing", "probe", "streamapp.W022", "server error instead of not_found"),
    ("signals", "probe", "streamapp.W023", "1011 after its grace period"),
    ("routing", "probe_direct", "streamapp.W024", "0.8 KiB more per socket"),
    ("memorylayer", "probe", "streamapp.W025", "announces to empty groups"),
])
def test_each_adapter_that_misses_an_internal_names_it_under_its_own_id(
    monkeypatch, adapter, probe, check_id, feature
):
    assert report(check_id) == []
    monkeypatch.setattr(f"streamapp.adapters.{adapter}.{probe}",
                        lambda: ["gone.attribute", "gone.method"])
    [text] = [str(m) for m in checks.run_checks() if m.id.startswith("streamapp.W02")]
    assert text.startswith(f"?: ({check_id}) streamapp")
    assert feature in text
    assert ": gone.attribute; gone.method" in text
