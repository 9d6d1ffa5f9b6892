"""tests.settings as a deployment runs them: access checks on, a small handshake budget.

STREAMAPP_<NAME> environment variables still win, as in tests.settings.
"""

from streamapp.conf import from_environment
from tests.settings import *  # noqa: F403

STREAMAPP = {  # noqa: F405
    **STREAMAPP,  # noqa: F405
    "OPEN_ACCESS": False,
    "CONNECTION_RATE": (12, 600.0),
    **from_environment(),
}
