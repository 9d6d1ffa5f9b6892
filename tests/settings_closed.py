"""tests.settings as a deployment runs them: access checks on, a small handshake budget."""

from tests.settings import *  # noqa: F403

STREAMAPP = {**STREAMAPP, "OPEN_ACCESS": False, "CONNECTION_RATE": (12, 600.0)}  # noqa: F405
