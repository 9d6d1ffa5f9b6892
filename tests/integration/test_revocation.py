"""Revocation reaches open sockets: every subscribe and cancel re-checks the user, and a socket
whose user was deactivated or whose token expired is closed with 4403 within REVALIDATE_SECONDS,
the client told why. ``streamapp.credentials.now`` drives token expiry; the periodic round is
waited for on the socket itself, with a timeout."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from streamapp import credentials, tokens
from tests.integration.test_security_input import AllQueries
from tests.support.clients import bearer, make_user, session_cookie, with_streamapp
from tests.support.helpers import receive_until, receive_until_closed
from tests.testapp.models import BurstTask, OwnedTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def closed_access(settings):
    # A round far away unless a test brings it near: subscribes must check on their own.
    with_streamapp(settings, OPEN_ACCESS=False, REVALIDATE_SECONDS=3600.0)


@pytest.fixture
def clock(monkeypatch):
    now = [credentials.now()]
    monkeypatch.setattr(credentials, "now", lambda: now[0])
    return now


async def subscribe(ws, task):
    await ws.send_json_to({"action": "subscribe", "task": task.task_key})
    return await ws.receive_json_from(timeout=5)


async def deactivate(user):
    await get_user_model().objects.filter(pk=user.pk).aupdate(is_active=False)


async def change_password(user):
    user.set_password("another one")
    await user.asave()


@pytest.mark.parametrize("signed_in_by", ["session", "token"])
@pytest.mark.parametrize("revoke", [deactivate, change_password])
async def test_a_revoked_user_cannot_subscribe_and_is_closed_4403(communicator_for, signed_in_by,
                                                                  revoke):
    user = await make_user("alice")
    headers = await session_cookie(user) if signed_in_by == "session" else bearer(user)
    done = await BurstTask.objects.acreate(status="completed")
    ws = await communicator_for("/ws/tasks/", headers=headers)
    assert (await subscribe(ws, done))["type"] == "state"

    await revoke(user)
    pending = await StepTask.objects.acreate()
    reply = await subscribe(ws, pending)
    assert reply["code"] == "forbidden" and reply["task"] == pending.task_key
    assert reply["message"].startswith("you are no longer signed in: ")
    frames, code = await receive_until_closed(ws)
    assert frames == [] and code == 4403
    await pending.arefresh_from_db()
    assert pending.status == "pending"  # not started by a revoked user


async def test_a_revoked_user_cannot_cancel(communicator_for):
    alice = await make_user("alice")
    task = await OwnedTask.objects.acreate(owner=alice)
    ws = await communicator_for(task, headers=bearer(alice))
    await receive_until(ws, lambda f: f.get("event") == "hello")
    await deactivate(alice)
    await ws.send_json_to({"action": "cancel"})
    frames, code = await receive_until_closed(ws)
    assert frames[0]["code"] == "forbidden" and code == 4403
    assert frames[0]["message"] == "you are no longer signed in: the token's user is inactive"
    await task.arefresh_from_db()
    assert task.status == "running"


async def test_an_expired_token_cannot_subscribe(communicator_for, settings, clock):
    with_streamapp(settings, TOKEN_MAX_AGE=600)
    user = await make_user("bob")
    ws = await communicator_for("/ws/tasks/", headers=bearer(user))
    done = await BurstTask.objects.acreate(status="completed")
    clock[0] += 599
    assert (await subscribe(ws, done))["type"] == "state"
    clock[0] += 2
    reply = await subscribe(ws, done)
    assert reply["message"] == "you are no longer signed in: the token has expired"
    assert (await receive_until_closed(ws))[1] == 4403


@pytest.mark.parametrize("path", ["/ws/tasks/", "one-task"])
async def test_idle_sockets_of_a_deactivated_user_are_closed_within_a_round(communicator_for,
                                                                           settings, path):
    with_streamapp(settings, REVALIDATE_SECONDS=0.2)
    carol, dave = await make_user("carol"), await make_user("dave")
    task = await StepTask.objects.acreate()
    target = task if path == "one-task" else path
    carols = [await communicator_for(target, headers=bearer(carol)),
              await communicator_for(target, headers=await session_cookie(carol))]
    daves = await communicator_for(target, headers=bearer(dave))
    if path == "one-task":
        for ws in [*carols, daves]:
            await receive_until(ws, lambda f: f.get("status") == "running")

    await deactivate(carol)
    for ws in carols:
        frames, code = await receive_until_closed(ws, timeout=10)
        assert [f["code"] for f in frames] == ["forbidden"] and code == 4403
        assert frames[0]["message"] in {
            "you are no longer signed in: the token's user is inactive",
            "you are no longer signed in: the account is inactive",
        }
    await daves.send_json_to({"action": "ping"})
    assert await daves.receive_json_from(timeout=5) == {"type": "pong"}  # others go on


async def test_an_idle_socket_is_closed_when_its_token_expires(communicator_for, settings, clock):
    with_streamapp(settings, TOKEN_MAX_AGE=600, REVALIDATE_SECONDS=0.2)
    ws = await communicator_for("/ws/tasks/", headers=bearer(await make_user("erin")))
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
    clock[0] += 601
    frames, code = await receive_until_closed(ws, timeout=10)
    assert frames == [{"type": "error", "code": "forbidden",
                       "message": "you are no longer signed in: the token has expired"}]
    assert code == 4403


def own_token(token):
    """A site's own authenticator: the token is a username, the user must be active."""
    return get_user_model().objects.filter(username=token, is_active=True).first()


async def test_a_sites_own_authenticator_is_asked_again(communicator_for, settings):
    with_streamapp(settings, TOKEN_AUTHENTICATOR=f"{__name__}.own_token")
    frank = await make_user("frank")
    ws = await communicator_for("/ws/tasks/", headers=[(b"authorization", b"Bearer frank")])
    done = await BurstTask.objects.acreate(status="completed")
    assert (await subscribe(ws, done))["type"] == "state"
    await deactivate(frank)
    assert (await subscribe(ws, done))["message"] == (
        "you are no longer signed in: the token was not accepted")
    assert (await receive_until_closed(ws))[1] == 4403


async def test_a_subscribe_re_checks_with_one_query_by_primary_key(communicator_for):
    gina = await make_user("gina")
    done = await BurstTask.objects.acreate(status="completed")
    ws = await communicator_for("/ws/tasks/", headers=bearer(gina))
    with AllQueries() as seen:
        assert (await subscribe(ws, done))["type"] == "state"
    user_reads = [sql for sql in seen.sql if "auth_user" in sql]
    assert len(user_reads) == 1 and '"auth_user"."id" =' in user_reads[0], user_reads


async def test_anonymous_sockets_are_not_watched_and_cost_no_user_query(communicator_for,
                                                                         settings):
    with_streamapp(settings, OPEN_ACCESS=True)
    done = await BurstTask.objects.acreate(status="completed")
    ws = await communicator_for("/ws/tasks/")
    with AllQueries() as seen:
        assert (await subscribe(ws, done))["type"] == "state"
    assert not any("auth_user" in sql for sql in seen.sql)


async def test_the_sweep_reads_all_users_in_one_query(settings):
    """credentials.problems: one query for any number of sockets and users."""
    users = [await make_user(f"u{n}") for n in range(30)]
    held = [credentials.for_token(u, tokens.mint_token(u)) for u in users for _ in range(3)]
    await deactivate(users[0])
    with AllQueries() as seen:
        found = await credentials.problems(held)
    assert len(seen.sql) == 1
    assert sorted(found.values()) == ["the token's user is inactive"] * 3
    assert all(c.user_pk == users[0].pk for c in found)
    await sync_to_async(lambda: None)()
