"""Test settings: the demo settings plus test-only task models."""

from demo.settings import *  # noqa: F403
from streamapp.conf import from_environment

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp", "tests.runnerapp"]  # noqa: F405

STREAMAPP = {
    "OPEN_ACCESS": True,
    # Short enough that lease tests finish quickly, long enough for a loaded 2-core CI.
    "LEASE_SECONDS": 30.0,
    "HEARTBEAT_SECONDS": 10.0,
    # Load tests open hundreds of sockets from 127.0.0.1; the limiter's own tests set limits.
    "CONNECTION_RATE": None,
    "ADDRESS_CONNECTION_RATE": None,
    "USER_CONNECTION_RATE": None,
    "USER_SOCKETS": None,
    "ANONYMOUS_SOCKETS": None,
    # Subprocess tests hand short leases, sweeps, timeouts and limits to their servers and
    # workers as STREAMAPP_<NAME> environment variables.
    **from_environment(),
}

# Fast hashing for test users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGGING = {"version": 1, "disable_existing_loggers": False}
