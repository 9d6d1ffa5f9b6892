"""Who a test client is: users, session cookies, bearer tokens, client addresses."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from streamapp.tokens import mint_token


async def make_user(username: str, **fields) -> object:
    return await sync_to_async(get_user_model().objects.create_user)(
        username, password="pw", **fields
    )


async def session_cookie(user) -> list[tuple[bytes, bytes]]:
    """Headers carrying a real login session for ``user``, as a browser would send them."""
    client = AsyncClient()
    await client.aforce_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={value}".encode())]


def bearer(user) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {mint_token(user)}".encode())]


def from_address(application, address: str):
    """``application`` as reached from ``address`` (WebsocketCommunicator sends no client)."""

    async def app(scope, receive, send):
        return await application({**scope, "client": [address, 50000]}, receive, send)

    return app


def with_streamapp(settings_fixture, **overrides) -> None:
    settings_fixture.STREAMAPP = {**settings_fixture.STREAMAPP, **overrides}
