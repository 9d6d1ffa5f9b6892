"""Bearer tokens for clients without a browser session: minting, and resolving to a user.

The default authenticator checks tokens signed with Django's ``SECRET_KEY``
(``django.core.signing``) naming a user id, valid for ``STREAMAPP["TOKEN_MAX_AGE"]`` seconds
and revoked when the user's password changes. A site with its own tokens names its function in
``STREAMAPP["TOKEN_AUTHENTICATOR"]``.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.core.exceptions import ValidationError
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string

from .conf import app_settings
from .exceptions import InvalidToken

logger = logging.getLogger("streamapp.tokens")

SALT = "streamapp.tokens"
DEFAULT_AUTHENTICATOR = "streamapp.tokens.authenticate_token"
# Enough of the user's session auth hash to notice a password change, not more.
FINGERPRINT_CHARS = 16
# What any token may look like: printable ASCII, no spaces (signed tokens, JWTs, base64, hex).
TOKEN_TEXT = re.compile(r"[!-~]{1,4096}", re.ASCII)


def fingerprint(user: Any) -> str:
    return user.get_session_auth_hash()[:FINGERPRINT_CHARS]


def mint_token(user: Any) -> str:
    """A token that authenticates ``user`` for ``STREAMAPP["TOKEN_MAX_AGE"]`` seconds from now."""
    return signing.dumps({"u": str(user.pk), "h": fingerprint(user)}, salt=SALT)


def read_token(token: str) -> tuple[dict[str, Any], float]:
    """A default token's payload and the time it was minted; InvalidToken when it is no good."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=app_settings.TOKEN_MAX_AGE)
    except signing.SignatureExpired:
        raise InvalidToken("the token has expired") from None
    except (signing.BadSignature, ValueError):
        raise InvalidToken("the token's signature is not valid") from None
    if not isinstance(payload, dict):
        raise InvalidToken("the token names no user")
    # Signed by us, so shaped by signing.dumps: payload:timestamp:signature.
    return payload, float(signing.b62_decode(token.rsplit(":", 2)[1]))


def token_problem(payload: dict[str, Any], user: Any) -> str | None:
    """Why a default token no longer signs ``user`` in (None: it does)."""
    if user is None:
        return "the token names no user"
    if not getattr(user, "is_active", True):
        return "the token's user is inactive"
    if not constant_time_compare(str(payload.get("h")), fingerprint(user)):
        return "the token was revoked: its user's password changed"
    return None


def authenticate_token(token: str) -> Any:
    """The default ``TOKEN_AUTHENTICATOR``: the active user ``token`` names, else InvalidToken."""
    payload, _ = read_token(token)
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get(pk=payload["u"])
    except (user_model.DoesNotExist, KeyError, TypeError, ValueError, ValidationError):
        raise InvalidToken("the token names no user") from None
    problem = token_problem(payload, user)
    if problem is not None:
        raise InvalidToken(problem)
    return user


async def aauthenticate(token: str) -> tuple[Any, str | None]:
    """``(user, None)`` for an accepted token, ``(AnonymousUser(), reason)`` otherwise.

    A refused token never falls back to the session: the client asked to be someone else. A token
    that is not printable ASCII is refused before any authenticator sees it; an authenticator that
    fails (raises anything but InvalidToken) refuses, and the failure is logged.
    """
    path = app_settings.TOKEN_AUTHENTICATOR
    if not path:
        return AnonymousUser(), "token authentication is turned off"
    if not isinstance(token, str) or TOKEN_TEXT.fullmatch(token) is None:
        return AnonymousUser(), "the token is malformed: expected printable ASCII"
    authenticator = import_string(path)
    try:
        if inspect.iscoroutinefunction(authenticator):
            user = await authenticator(token)
        else:
            user = await sync_to_async(authenticator)(token)
    except InvalidToken as exc:
        logger.info("token refused reason=%s", exc)
        return AnonymousUser(), str(exc)
    except Exception:  # noqa: BLE001 - fail closed, loudly: a broken authenticator grants nothing
        logger.exception("token authenticator raised; token refused authenticator=%s", path)
        return AnonymousUser(), "the token could not be checked"
    if user is None:
        return AnonymousUser(), "the token was not accepted"
    return user, None


def bearer_from_header(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, token = (value or "").strip(" \t").partition(" ")
    if scheme.lower() != "bearer" or not token.strip(" \t"):
        return None
    return token.strip(" \t")


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """A WebSocket scope's token: the Authorization header first, else ``?token=``."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            token = bearer_from_header(value.decode("latin-1"))
            if token is not None:
                return token
    raw = scope.get("query_string") or b""
    query = parse_qs(raw.decode("latin-1") if isinstance(raw, (bytes, bytearray)) else "")
    values = query.get("token")
    return values[-1] if values else None
