"""The security settings: checked at start-up, and readable from STREAMAPP_<NAME> variables."""

from __future__ import annotations

import pytest

from streamapp.checks.security import check_metrics_access, check_security_settings
from streamapp.conf import from_environment
from tests.support.clients import with_streamapp


def ids(settings, **overrides) -> list[str]:
    with_streamapp(settings, **overrides)
    return [problem.id for problem in check_security_settings()]


def test_the_defaults_pass(settings):
    assert ids(settings) == []


@pytest.mark.parametrize("overrides, expected", [
    ({"ADDRESS_CONNECTION_RATE": (0, 60)}, ["streamapp.E102"]),
    ({"USER_CONNECTION_RATE": "30/min"}, ["streamapp.E102"]),
    ({"REFUSAL_RATE": (10, 0)}, ["streamapp.E102"]),
    ({"USER_SOCKETS": 0}, ["streamapp.E104"]),
    ({"ANONYMOUS_SOCKETS": True}, ["streamapp.E104"]),
    ({"USER_SOCKETS": None, "ANONYMOUS_SOCKETS": None}, []),
    ({"REVALIDATE_SECONDS": 0}, ["streamapp.E105"]),
    ({"TRUSTED_PROXIES": "10.0.0.1"}, ["streamapp.E106"]),
    ({"TRUSTED_PROXIES": ["10.0.0.0/8", "proxy.internal"]}, ["streamapp.E106"]),
    ({"TRUSTED_PROXIES": 2}, []),
    ({"METRICS_ALLOWED_ADDRESSES": ["nope"]}, ["streamapp.E107"]),
    ({"METRICS_TOKEN": "short"}, ["streamapp.E107"]),
])
def test_limits_that_cannot_be_used_are_errors(settings, overrides, expected):
    assert ids(settings, **overrides) == expected


def test_a_shared_cache_that_is_not_redis_is_warned_about(settings):
    settings.CACHES = {**settings.CACHES, "db": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache"}}
    assert ids(settings, RATE_LIMIT_CACHE="db") == ["streamapp.W103"]


def test_a_public_metrics_endpoint_is_a_deploy_warning(settings):
    with_streamapp(settings, METRICS_ALLOWED_ADDRESSES=None, METRICS_TOKEN=None)
    assert [w.id for w in check_metrics_access()] == ["streamapp.W104"]
    with_streamapp(settings, METRICS_TOKEN="a-long-enough-secret")
    assert check_metrics_access() == []


def test_limits_read_from_the_environment():
    assert from_environment({
        "STREAMAPP_CONNECTION_RATE": "60/60",
        "STREAMAPP_REFUSAL_RATE": "(10, 60.0)",
        "STREAMAPP_USER_CONNECTION_RATE": "none",
        "STREAMAPP_USER_SOCKETS": "none",
        "STREAMAPP_ANONYMOUS_SOCKETS": "50",
        "STREAMAPP_TRUSTED_PROXIES": "2",
        "STREAMAPP_METRICS_ALLOWED_ADDRESSES": "10.0.0.0/8, 192.0.2.7",
        "STREAMAPP_METRICS_TOKEN": "  Case-Kept-Secret  ",
    }) == {
        "CONNECTION_RATE": (60, 60.0), "REFUSAL_RATE": (10, 60.0),
        "USER_CONNECTION_RATE": None, "USER_SOCKETS": None, "ANONYMOUS_SOCKETS": 50,
        "TRUSTED_PROXIES": 2, "METRICS_ALLOWED_ADDRESSES": ["10.0.0.0/8", "192.0.2.7"],
        "METRICS_TOKEN": "Case-Kept-Secret",
    }
    assert from_environment({"STREAMAPP_TRUSTED_PROXIES": "10.0.0.0/8"}) == {
        "TRUSTED_PROXIES": ["10.0.0.0/8"]}
