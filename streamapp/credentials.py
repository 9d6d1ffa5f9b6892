"""What vouched for a socket's user at its handshake, and whether it still does (revocation).

A socket is signed in once, at its handshake. These checks tell an open socket when that no
longer holds: the user was deactivated or deleted, the password changed (the session's auth
hash or the default token's fingerprint no longer matches), or the token expired.

- ``recheck`` (every subscribe and cancel): the user's row read afresh, one query by primary
  key; a site's own TOKEN_AUTHENTICATOR is run again instead, since only it knows its tokens.
- ``problems`` (the open sockets' periodic sweep): one query per 500 users for every socket of
  the process; a site's own authenticator once per distinct token.

``now`` is the one clock of this module: tests replace it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import HASH_SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from .conf import app_settings
from .exceptions import InvalidToken
from .tokens import DEFAULT_AUTHENTICATOR, aauthenticate, read_token, token_problem

SCOPE_KEY = "streamapp.credential"
SESSION, TOKEN = "session", "token"
CHUNK = 500


def now() -> float:
    """Wall-clock seconds, as token timestamps are."""
    return time.time()


@dataclass(eq=False)
class Credential:
    """How one socket's user signed in."""

    kind: str  # SESSION or TOKEN
    user_pk: Any
    token: str | None = None  # TOKEN: the token itself
    payload: dict[str, Any] | None = None  # TOKEN from the default authenticator: what it says
    session_hash: str | None = None  # SESSION: the auth hash the session was signed in with
    expires_at: float | None = None  # TOKEN from the default authenticator: when it expires

    @property
    def default_token(self) -> bool:
        return self.payload is not None


def for_token(user: Any, token: str) -> Credential:
    """The credential of a token that just signed ``user`` in."""
    if app_settings.TOKEN_AUTHENTICATOR == DEFAULT_AUTHENTICATOR:
        try:
            payload, issued_at = read_token(token)
        except InvalidToken:  # expired since the authenticator read it: the next check says so
            payload, issued_at = {}, 0.0
        return Credential(TOKEN, user.pk, token=token, payload=payload,
                          expires_at=issued_at + app_settings.TOKEN_MAX_AGE)
    return Credential(TOKEN, user.pk, token=token)


def for_session(scope: dict[str, Any]) -> Credential | None:
    """The credential of a scope's session user, or None when it is anonymous."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    session = scope.get("session")
    session_hash = session.get(HASH_SESSION_KEY) if session is not None else None
    return Credential(SESSION, user.pk, session_hash=session_hash)


def credential_of(scope: dict[str, Any]) -> Credential | None:
    """The credential the auth stack left in ``scope``, else the session's (None: anonymous)."""
    if SCOPE_KEY in scope:
        return scope[SCOPE_KEY]
    return for_session(scope)


def problem(credential: Credential, user: Any, moment: float) -> str | None:
    """Why ``credential`` no longer signs in ``user`` (its fresh row, None if gone), else None."""
    if credential.expires_at is not None and moment >= credential.expires_at:
        return "the token has expired"
    if credential.default_token:
        return token_problem(credential.payload, user)
    if user is None:
        return "the account no longer exists"
    if not getattr(user, "is_active", True):
        return "the account is inactive"
    if credential.kind == SESSION and credential.session_hash is not None:
        hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
        if not any(constant_time_compare(credential.session_hash, h) for h in hashes):
            return "the password changed: sign in again"
    return None


async def recheck(credential: Credential) -> tuple[Any, str | None]:
    """The credential's user read afresh, and why it no longer signs in, if it does not."""
    if credential.kind == TOKEN and not credential.default_token:
        user, reason = await aauthenticate(credential.token)
        if reason is None and user.pk != credential.user_pk:
            reason = "the token now names another user"
        return user, reason
    user = await get_user_model()._default_manager.filter(pk=credential.user_pk).afirst()
    return user, problem(credential, user, now())


async def problems(credentials: Iterable[Credential]) -> dict[Credential, str]:
    """Why each of ``credentials`` that no longer signs its user in does not."""
    credentials = list(credentials)
    found: dict[Credential, str] = {}
    by_token: dict[str, list[Credential]] = {}
    by_row: list[Credential] = []
    for credential in credentials:
        if credential.kind == TOKEN and not credential.default_token:
            by_token.setdefault(credential.token, []).append(credential)
        else:
            by_row.append(credential)
    for holders in by_token.values():
        _, reason = await recheck(holders[0])
        if reason is not None:
            found.update((holder, reason) for holder in holders)
    pks = list({credential.user_pk for credential in by_row})
    users: dict[Any, Any] = {}
    manager = get_user_model()._default_manager
    for start in range(0, len(pks), CHUNK):
        async for user in manager.filter(pk__in=pks[start:start + CHUNK]):
            users[user.pk] = user
    moment = now()
    for credential in by_row:
        reason = problem(credential, users.get(credential.user_pk), moment)
        if reason is not None:
            found[credential] = reason
    return found
