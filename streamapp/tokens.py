"""Bearer tokens for clients without a browser session: minting, and resolving to a user.

The default authenticator checks tokens signed with Django's ``SECRET_KEY``
(``django.core.signing``) naming a user id, valid for ``STREAMAPP["TOKEN_MAX_AGE"]`` seconds
and revoked when the user's password changes. A site with its own tokens names its function in
``STREAMAPP["TOKEN_AUTHENTICATOR"]``.
"""

from __future__ import annotations

import inspect
import logging
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
# Enough of the user's session auth hash to notice a password change, not more.
FINGERPRINT_CHARS = 16


def _fingerprint(user: Any) -> str:
    return user.get_session_auth_hash()[:FINGERPRINT_CHARS]


def mint_token(user: Any) -> str:
    """A token that authenticates ``user`` for ``STREAMAPP["TOKEN_MAX_AGE"]`` seconds from now."""
    return signing.dumps({"u": str(user.pk), "h": _fingerprint(user)}, salt=SALT)


def authenticate_token(token: str) -> Any:
    """The default ``TOKEN_AUTHENTICATOR``: the active user ``token`` names, else InvalidToken."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=app_settings.TOKEN_MAX_AGE)
    except signing.SignatureExpired:
        raise InvalidToken("the token has expired") from None
    except signing.BadSignature:
        raise InvalidToken("the token's signature is not valid") from None
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get(pk=payload["u"])
    except (user_model.DoesNotExist, KeyError, TypeError, ValueError, ValidationError):
        raise InvalidToken("the token names no user") from None
    if not user.is_active:
        raise InvalidToken("the token's user is inactive")
    if not constant_time_compare(str(payload.get("h")), _fingerprint(user)):
        raise InvalidToken("the token was revoked: its user's password changed")
    return user


async def aauthenticate(token: str) -> tuple[Any, str | None]:
    """``(user, None)`` for an accepted token, ``(AnonymousUser(), reason)`` otherwise.

    A refused token never falls back to the session: the client asked to be someone else.
    """
    path = app_settings.TOKEN_AUTHENTICATOR
    if not path:
        return AnonymousUser(), "token authentication is turned off"
    authenticator = import_string(path)
    try:
        if inspect.iscoroutinefunction(authenticator):
            user = await authenticator(token)
        else:
            user = await sync_to_async(authenticator)(token)
    except InvalidToken as exc:
        logger.info("token refused reason=%s", exc)
        return AnonymousUser(), str(exc)
    if user is None:
        return AnonymousUser(), "the token was not accepted"
    return user, None


def bearer_from_header(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, token = (value or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """A WebSocket scope's token: the Authorization header first, else ``?token=``."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            token = bearer_from_header(value.decode("latin-1"))
            if token is not None:
                return token
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[-1] if values else None
