"""The sockets' upkeep: one loop per process for all of its sockets, not a task per socket.

What it keeps (convergence repairs a lost final state, slow clients closed 4408, memberships
renewed before group_expiry) is tested in test_lossless.py and test_flow_control.py; here, what
it costs: no task per socket, the quiet tasks of the whole process read in one query per round,
completed tasks never read again.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.layers import get_channel_layer

from consumers import upkeep as upkeep_module
from consumers.hub import hub_for
from consumers.upkeep import upkeep_for
from streamapp.coordinator import coordinator
from tests.support.helpers import receive_until, run_to_end
from tests.testapp.models import BurstTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reads(monkeypatch, settings):
    """Every round's read of task positions: the keys asked for, one list per call."""
    settings.STREAMAPP = {**settings.STREAMAPP, "CONVERGE_SECONDS": 0.2}
    calls: list[list[str]] = []
    read = upkeep_module.positions_by_key
    arrived = asyncio.Event()

    async def counted(keys):
        calls.append(sorted(keys))
        arrived.set()
        return await read(keys)

    monkeypatch.setattr(upkeep_module, "positions_by_key", counted)

    async def rounds(count):
        """The next ``count`` reads from now on."""
        first = len(calls)
        while len(calls) < first + count:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), timeout=10)
        return calls[first:first + count]

    return rounds


def tasks_named(name):
    return [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]


async def test_idle_sockets_have_no_task_of_their_own(communicator_for):
    """Sockets on ws/tasks/, each subscribed to a finished task: one upkeep loop for all of
    them, and no task per socket beyond the one the server runs its application in."""
    task = await BurstTask.objects.acreate(count=3)
    await run_to_end(task)
    before = asyncio.all_tasks()

    async def others_after(sockets):
        for _ in range(sockets):
            ws = await communicator_for("/ws/tasks/")
            await ws.send_json_to({"action": "subscribe", "task": task.task_key, "since": 3})
            await receive_until(ws, lambda f: f.get("type") == "state")
        await asyncio.gather(*hub_for(get_channel_layer())._deferred)  # news under way, if any
        return {t for t in asyncio.all_tasks() - before if not t.done()}

    first = await others_after(20)
    more = await others_after(20)
    assert len(more) - len(first) == 20  # the 20 applications, and nothing else
    assert len(tasks_named("streamapp socket upkeep")) == 1


async def test_quiet_tasks_are_read_together_and_completed_ones_never_again(
    communicator_for, reads
):
    """Ten sockets on each of two quiet running tasks and one completed task: every round
    reads the quiet ones in one call; the completed one is read at most once, then never."""
    running = [await StepTask.objects.acreate() for _ in range(2)]
    done = await BurstTask.objects.acreate(count=3)
    await run_to_end(done)
    for task in running:
        assert await coordinator.start_task(task)
    for task in (*running, done):
        for _ in range(10):
            ws = await communicator_for(task)
            await receive_until(ws, lambda f: f.get("type") == "state")

    calls = await reads(4)  # one call per round, each with every key quiet by then
    keys = {t.task_key for t in running}
    assert all(set(call) <= keys | {done.task_key} for call in calls), calls
    assert sum(done.task_key in call for call in calls) <= 1
    assert set(calls[-1]) == keys


async def test_only_tasks_silent_for_converge_seconds_are_read(communicator_for, monkeypatch):
    """A task whose news keeps coming is not read: only silence is checked."""
    busy, quiet = await StepTask.objects.acreate(), await StepTask.objects.acreate()
    for task in (busy, quiet):
        assert await coordinator.start_task(task)
        ws = await communicator_for(task)
        await receive_until(ws, lambda f: f.get("status") == "running")
    asked = []

    async def positions(keys):
        asked.append(sorted(keys))
        return {}

    monkeypatch.setattr(upkeep_module, "positions_by_key", positions)
    upkeep = upkeep_for(hub_for(get_channel_layer()))
    now = time.monotonic()
    upkeep.hub.heard_at[busy.task_key] = now - 1
    upkeep.hub.heard_at[quiet.task_key] = now - 60
    await upkeep.find_suspects(now)
    assert asked == [[quiet.task_key]]


async def test_the_loop_ends_with_the_last_socket(communicator_for):
    task = await StepTask.objects.acreate()
    assert await coordinator.start_task(task)
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    [loop] = tasks_named("streamapp socket upkeep")
    await ws.disconnect()
    await asyncio.wait_for(loop, timeout=5)
    assert tasks_named("streamapp socket upkeep") == []
