"""Every exception streamapp raises derives from StreamAppError."""

from django.core.exceptions import ImproperlyConfigured


class StreamAppError(Exception):
    """Base class of streamapp's errors."""


class StreamAppConfigurationError(StreamAppError, ImproperlyConfigured):
    """The STREAMAPP settings or a task model are misconfigured."""


class EventTooLarge(StreamAppError, ValueError):
    """An event's encoded frame is larger than STREAMAPP['MAX_EVENT_BYTES']."""


class EventNotSerializable(StreamAppError, TypeError):
    """An event's data cannot be encoded as JSON."""


class UnknownTask(StreamAppError, LookupError):
    """A task key names no StreamTask model or no row of it."""


class LeaseLost(StreamAppError):
    """This process no longer owns the task's lease: another process may have taken it over."""


class WorkerLost(StreamAppError):
    """The worker that ran a task stopped renewing its lease (it crashed or was killed)."""


class NothingToCancel(StreamAppError):
    """A cancel found the task already ended."""


class Unreachable(StreamAppError):
    """The task runs in another process and this process's channel layer cannot reach it."""


class ProtocolError(StreamAppError):
    """A client frame broke the wire protocol; ``code`` is the error frame's code.

    ``close``: the socket must close after the error frame, whatever its limits say (a client
    whose sign-in no longer holds).
    """

    def __init__(
        self, code: str, message: str, task: str | None = None, close: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.task = task
        self.close = close


class InvalidToken(StreamAppError):
    """A bearer token was refused; the message says why (expired, bad signature, …)."""


class MissingExtra(StreamAppConfigurationError):
    """A feature was used whose pip extra (streamapp[redis], [postgres], [metrics]) is missing."""


class BadQuery(StreamAppError, ValueError):
    """An HTTP query parameter is malformed; the message names it and what was expected."""
