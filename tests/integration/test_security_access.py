"""Who may watch and cancel (DESIGN §2 hooks, §3 forbidden): with OPEN_ACCESS off, as deployed.

Anonymous, signed in by session cookie, signed in by token, owner, staff; checked on every
subscribe, replay, HTTP state read and cancel, on the real ASGI application.
"""

from __future__ import annotations

from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.management import call_command
from django.test import AsyncClient

from streamapp import tokens
from streamapp.asgi.origin import AllowedHostsOriginValidator
from streamapp.checks.security import check_open_access, check_security_settings
from streamapp.coordinator import coordinator
from streamapp.exceptions import InvalidToken
from tests.support.clients import bearer, make_user, session_cookie, with_streamapp
from tests.support.helpers import receive_until, receive_until_closed, task_path
from tests.testapp.models import OwnedTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def closed_access(settings):
    with_streamapp(settings, OPEN_ACCESS=False)


def running(frame):
    return frame.get("status") == "running"


async def assert_untouched(task, status):
    await task.arefresh_from_db()
    assert task.status == status and task.attempts == (0 if status == "pending" else 1)


async def test_anonymous_may_not_watch_and_the_pending_task_is_not_started(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    frames, code = await receive_until_closed(ws)
    assert frames == [{
        "type": "error", "code": "forbidden", "message": f"you may not watch {task.task_key}",
        "task": task.task_key,
    }]
    assert code == 4403
    await assert_untouched(task, "pending")
    assert not coordinator.is_task_running(task)


async def test_anonymous_replay_is_forbidden_too(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task, since=0)
    frames, code = await receive_until_closed(ws)
    assert [f["code"] for f in frames] == ["forbidden"] and code == 4403


async def test_a_session_user_watches_but_may_not_cancel(communicator_for):
    bob = await make_user("bob")
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task, headers=await session_cookie(bob))
    await receive_until(ws, running)  # allowed, and the subscription started it

    await ws.send_json_to({"action": "cancel"})
    assert await ws.receive_json_from(timeout=5) == {
        "type": "error", "code": "forbidden", "message": f"you may not cancel {task.task_key}",
        "task": task.task_key,
    }
    await assert_untouched(task, "running")
    assert coordinator.is_task_running(task)
    await task.send_signal("step", "go")  # the socket and the task go on
    assert (await ws.receive_json_from(timeout=5))["seq"] == 1


async def test_staff_may_cancel(communicator_for):
    staff = await make_user("root", is_staff=True)
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task, headers=await session_cookie(staff))
    await receive_until(ws, running)
    await ws.send_json_to({"action": "cancel"})
    frames, code = await receive_until_closed(ws)
    assert frames[-1]["status"] == "cancelled" and code == 1000
    await task.arefresh_from_db()
    assert task.status == "cancelled"


async def test_staff_may_cancel_over_ws_tasks_and_a_deleted_task_is_not_found(communicator_for,
                                                                             settings):
    with_streamapp(settings, OPEN_ACCESS=False, AUTO_START=False)
    staff = await make_user("root", is_staff=True)
    task = await StepTask.objects.acreate()
    ws = await communicator_for("/ws/tasks/", headers=bearer(staff))
    await ws.send_json_to({"action": "subscribe", "task": task.task_key})
    assert (await ws.receive_json_from(timeout=5))["status"] == "pending"
    await ws.send_json_to({"action": "cancel", "task": task.task_key})
    assert (await ws.receive_json_from(timeout=5))["status"] == "cancelled"

    gone = await StepTask.objects.acreate()
    one = await communicator_for(gone, headers=bearer(staff))
    assert (await one.receive_json_from(timeout=5))["status"] == "pending"
    await gone.adelete()
    await one.send_json_to({"action": "cancel"})
    assert (await one.receive_json_from(timeout=5))["code"] == "not_found"


async def test_the_owner_may_cancel_and_another_user_may_not(communicator_for):
    alice, bob = await make_user("alice"), await make_user("bob")
    task = await OwnedTask.objects.acreate(owner=alice)
    watcher = await communicator_for("/ws/tasks/", headers=bearer(bob))
    await watcher.send_json_to({"action": "subscribe", "task": task.task_key})
    await receive_until(watcher, lambda f: f.get("event") == "hello")

    await watcher.send_json_to({"action": "cancel", "task": task.task_key})
    assert (await watcher.receive_json_from(timeout=5))["code"] == "forbidden"
    await assert_untouched(task, "running")

    owner = await communicator_for(task, headers=bearer(alice))
    await receive_until(owner, lambda f: f.get("event") == "hello")
    await owner.send_json_to({"action": "cancel"})
    frames, code = await receive_until_closed(owner)
    assert frames[-1]["status"] == "cancelled" and code == 1000
    cancelled = await receive_until(watcher, lambda f: f.get("type") == "state")
    assert cancelled[-1]["status"] == "cancelled"  # the multi socket stays open and is told


async def test_a_forbidden_subscribe_on_ws_tasks_leaves_the_socket_and_task_alone(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for("/ws/tasks/")
    await ws.send_json_to({"action": "subscribe", "task": task.task_key, "since": 0})
    assert (await ws.receive_json_from(timeout=5))["code"] == "forbidden"
    await ws.send_json_to({"action": "cancel", "task": task.task_key})
    assert (await ws.receive_json_from(timeout=5))["code"] == "forbidden"
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
    await assert_untouched(task, "pending")


@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_token_signs_a_client_in(communicator_for, where):
    carol = await make_user("carol")
    task = await StepTask.objects.acreate()
    if where == "header":
        ws = await communicator_for(task, headers=bearer(carol))
    else:
        ws = await communicator_for(f"{task_path(task)}?since=0&token={tokens.mint_token(carol)}")
    await receive_until(ws, running)


async def test_a_refused_token_is_anonymous_even_with_a_session_and_says_why(communicator_for):
    dave = await make_user("dave")
    task = await StepTask.objects.acreate()
    headers = [*await session_cookie(dave), (b"authorization", b"Bearer not-a-token")]
    ws = await communicator_for(task, headers=headers)
    frames, code = await receive_until_closed(ws)
    assert frames[0]["message"] == (
        f"you may not watch {task.task_key} (token refused: the token's signature is not valid)"
    )
    assert code == 4403


async def test_the_default_authenticator_refuses_expired_revoked_and_inactive_tokens():
    erin = await make_user("erin")
    with mock.patch.object(signing.time, "time", return_value=signing.time.time() - 7200):
        old = tokens.mint_token(erin)
    fresh = tokens.mint_token(erin)
    authenticate = sync_to_async(tokens.authenticate_token)
    assert (await authenticate(fresh)).pk == erin.pk
    for token, reason in [
        (old, "the token has expired"),
        (fresh[:-2] + "xx", "the token's signature is not valid"),
        (signing.dumps({"u": "999999", "h": ""}, salt=tokens.SALT), "the token names no user"),
        (signing.dumps({"u": "x y", "h": ""}, salt=tokens.SALT), "the token names no user"),
    ]:
        with pytest.raises(InvalidToken, match=reason):
            await authenticate(token)

    erin.set_password("changed")
    await erin.asave()
    with pytest.raises(InvalidToken, match="password changed"):
        await authenticate(fresh)
    erin.is_active = False
    await erin.asave()
    with pytest.raises(InvalidToken, match="inactive"):
        await authenticate(tokens.mint_token(erin))


def token_is_the_username(token):
    """A site's own authenticator, as TOKEN_AUTHENTICATOR names it."""
    return get_user_model().objects.filter(username=token).first()


async def async_token_is_the_username(token):
    return await sync_to_async(token_is_the_username)(token)


@pytest.mark.parametrize("authenticator", ["token_is_the_username", "async_token_is_the_username"])
async def test_a_pluggable_authenticator(communicator_for, settings, authenticator):
    with_streamapp(settings, TOKEN_AUTHENTICATOR=f"{__name__}.{authenticator}")
    await make_user("frank")
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task, headers=[(b"authorization", b"Bearer frank")])
    await receive_until(ws, running)
    refused = await communicator_for(task, headers=[(b"authorization", b"bearer nobody")])
    frames, code = await receive_until_closed(refused)
    assert "token refused: the token was not accepted" in frames[0]["message"] and code == 4403


async def test_token_auth_can_be_turned_off(communicator_for, settings):
    with_streamapp(settings, TOKEN_AUTHENTICATOR=None)
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task, headers=bearer(await make_user("gina")))
    frames, code = await receive_until_closed(ws)
    assert "token authentication is turned off" in frames[0]["message"] and code == 4403


async def test_other_authorization_schemes_are_not_tokens(communicator_for):
    hank = await make_user("hank")
    task = await StepTask.objects.acreate()
    headers = [*await session_cookie(hank), (b"authorization", b"Basic aGFuazpwdw==")]
    ws = await communicator_for(task, headers=headers)
    await receive_until(ws, running)  # the session user, untouched by a non-bearer header


async def test_a_permission_hook_that_raises_denies_and_is_logged(communicator_for, monkeypatch,
                                                                  caplog):
    def broken(self, user):
        raise RuntimeError("hook bug")

    monkeypatch.setattr(StepTask, "can_subscribe", broken)
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    frames, code = await receive_until_closed(ws)
    assert frames[0]["code"] == "forbidden" and code == 4403
    response = await AsyncClient().get(f"/tasks/testapp/steptask/{task.pk}/")
    assert response.status_code == 403
    raised = [r for r in caplog.records if r.getMessage().startswith("permission hook raised")]
    assert len(raised) == 2 and all(r.exc_info[1].args == ("hook bug",) for r in raised)


async def test_http_state_read_is_authorized_by_session_or_token():
    ivy = await make_user("ivy")
    task = await StepTask.objects.acreate()
    path = f"/tasks/testapp/steptask/{task.pk}/"
    anonymous = await AsyncClient().get(path)
    assert anonymous.status_code == 403 and anonymous.json()["code"] == "forbidden"

    signed_in = AsyncClient()
    await signed_in.aforce_login(ivy)
    assert (await signed_in.get(path)).json()["status"] == "pending"

    by_token = await AsyncClient().get(
        path, headers={"Authorization": f"Bearer {tokens.mint_token(ivy)}"}
    )
    assert by_token.status_code == 200 and by_token.json()["task"] == task.task_key
    refused = await AsyncClient().get(path, headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 403
    assert refused.json()["message"].endswith("(token refused: the token's signature is not valid)")


def test_origins_default_to_localhost_in_debug_without_allowed_hosts(settings):
    settings.DEBUG, settings.ALLOWED_HOSTS = True, []
    assert AllowedHostsOriginValidator(None).allowed_origins == ["localhost", "127.0.0.1", "[::1]"]
    settings.DEBUG = False
    assert AllowedHostsOriginValidator(None).allowed_origins == []


@pytest.mark.parametrize("origin, accepted", [
    (b"http://evil.example", False),
    (b"http://localhost:8000", True),
    (b"http://127.0.0.1", True),
    (None, True),  # no Origin: not a browser, so no cross-site hijack; auth decides
])
async def test_origin_check(application, origin, accepted):
    headers = [(b"origin", origin)] if origin else []
    ws = WebsocketCommunicator(application, "/ws/tasks/", headers=headers)
    connected, code = await ws.connect(timeout=5)
    assert connected is accepted
    if accepted:
        await ws.send_json_to({"action": "ping"})
        assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
        await ws.disconnect()
    # Refused before accept: daphne answers the handshake with HTTP 403 (tests/e2e/test_daphne.py).


def test_minttoken_prints_a_token_for_the_user(db, capsys):
    user = get_user_model().objects.create_user("jill")
    call_command("minttoken", "jill")
    token = capsys.readouterr().out.strip()
    assert tokens.authenticate_token(token) == user
    with pytest.raises(Exception, match="no user 'nobody'"):
        call_command("minttoken", "nobody")


def test_security_settings_are_checked_at_start_up(settings):
    assert check_security_settings() == []
    assert check_open_access() == []
    with_streamapp(settings, TOKEN_AUTHENTICATOR=None, CONNECTION_RATE=None, MESSAGE_RATE=None)
    assert check_security_settings() == []
    with_streamapp(settings, TOKEN_AUTHENTICATOR="no.such.function", MESSAGE_RATE=(0, 1),
                   CONNECTION_RATE="60/min", RATE_LIMIT_CACHE="nope",
                   MAX_CLIENT_FRAME_BYTES=2 * 1024 * 1024)
    assert [e.id for e in check_security_settings()] == [
        "streamapp.E101", "streamapp.E102", "streamapp.E102", "streamapp.W102", "streamapp.E103"
    ]
    with_streamapp(settings, TOKEN_AUTHENTICATOR="streamapp.tokens.SALT")
    assert "is not callable" in check_security_settings()[0].msg
    with_streamapp(settings, OPEN_ACCESS=True)
    assert [w.id for w in check_open_access()] == ["streamapp.W101"]
