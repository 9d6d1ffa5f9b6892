"""consumers/hub.py on a real in-memory channel layer, with listeners that record what they get.

No database and no socket: memberships are read from the layer, deliveries from the listeners
(scripts/mutation runs these).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from channels.layers import InMemoryChannelLayer

from consumers.hub import (
    DEFAULT_GROUP_EXPIRY,
    REPAIR_FIRST_SECONDS,
    REPAIR_MAX_SECONDS,
    FanOutHub,
    backoff,
    hub_for,
    rejoin_interval,
)
from streamapp import broadcast
from streamapp.positions import Position
from tests.testapp.models import StepTask

KEY = "app.model.1"
GROUP = broadcast.task_group(KEY)


class Layer(InMemoryChannelLayer):
    """The in-memory layer, recording every membership change it is asked for."""

    def __init__(self, fail: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.changes: list[tuple[str, str]] = []
        self.fail = fail
        self.failing_discards = 0  # how many discards still to refuse

    async def group_add(self, group, channel):
        self.changes.append(("add", group))
        if self.fail:
            raise ConnectionError("the layer is away")
        await super().group_add(group, channel)

    async def group_discard(self, group, channel):
        self.changes.append(("discard", group))
        if self.failing_discards:
            self.failing_discards -= 1
            raise ConnectionError("the layer is away")
        await super().group_discard(group, channel)

    def members(self, group):
        return set(self.groups.get(group, {}))


class Listener:
    """A socket as the hub sees it: ready or not, and what it was handed."""

    def __init__(self, ready: bool = True, release: asyncio.Event | None = None) -> None:
        self.ready = ready
        self.release = release
        self.taken: list[dict] = []
        self.got_news = asyncio.Event()

    def ready_for(self, message):
        return self.ready

    async def take_news(self, message):
        if self.release is not None:
            await self.release.wait()
        self.taken.append(message)
        self.got_news.set()


class Rechecking(Listener):
    """Also records the positions it is asked to re-check its tasks from."""

    def __init__(self) -> None:
        super().__init__()
        self.rechecked: list[tuple[str, Position]] = []
        self.recheck_done = asyncio.Event()

    async def recheck(self, key, position):
        self.rechecked.append((key, position))
        self.recheck_done.set()


class Broken(Listener):
    async def take_news(self, message):
        raise RuntimeError("socket went wrong")


def news(key=KEY, seq=1):
    return {"type": "stream.events", "task": key, "events": [(seq, "{}")]}


# -- renewal timing ----------------------------------------------------------------------------


def test_memberships_are_renewed_at_a_quarter_of_the_group_expiry():
    assert rejoin_interval(InMemoryChannelLayer(group_expiry=100)) == 25
    assert rejoin_interval(object()) == DEFAULT_GROUP_EXPIRY / 4 == 21600


def test_a_join_trusts_a_membership_for_at_most_a_second_or_half_a_renewal():
    assert FanOutHub(Layer()).refresh_seconds == 1.0
    assert FanOutHub(Layer(group_expiry=2)).refresh_seconds == 0.25


# -- joining and leaving -------------------------------------------------------------------------


async def test_the_first_join_makes_the_membership_and_starts_reading():
    layer = Layer()
    hub = FanOutHub(layer)
    listener = Listener()
    await hub.join(KEY, listener)
    assert hub.channel is not None and layer.members(GROUP) == {hub.channel}
    assert layer.changes == [("add", GROUP)] and hub.listeners == {KEY: {listener: None}}
    await layer.group_send(GROUP, news())
    await asyncio.wait_for(listener.got_news.wait(), timeout=5)
    assert listener.taken == [news()]
    await hub.leave(KEY, listener)


async def test_a_join_soon_after_the_last_one_trusts_the_membership():
    layer = Layer()
    hub = FanOutHub(layer)
    first, second = Listener(), Listener()
    await hub.join(KEY, first)
    channel = hub.channel
    await hub.join(KEY, second)
    await hub.join(KEY, first)  # a renewal, too soon to be due
    assert layer.changes == [("add", GROUP)] and hub.channel == channel
    assert list(hub.listeners[KEY]) == [first, second]
    await hub.leave(KEY, first)
    await hub.leave(KEY, second)


async def test_a_join_once_the_refresh_time_passed_makes_the_membership_again():
    layer = Layer()
    hub = FanOutHub(layer)
    listener = Listener()
    await hub.join(KEY, listener)
    await layer.group_discard(GROUP, hub.channel)  # the layer forgot it (Redis restarted)
    hub._joined_at[KEY] -= hub.refresh_seconds  # as if the last join were that old
    await hub.join(KEY, listener)
    assert layer.members(GROUP) == {hub.channel}
    assert layer.changes == [("add", GROUP), ("discard", GROUP), ("add", GROUP)]
    await hub.leave(KEY, listener)


async def test_one_channel_serves_every_task_of_the_hub():
    layer = Layer()
    hub = FanOutHub(layer)
    one, two = Listener(), Listener()
    await hub.join("app.model.1", one)
    await hub.join("app.model.2", two)
    assert layer.members(broadcast.task_group("app.model.2")) == {hub.channel}
    assert layer.members(GROUP) == {hub.channel}
    await layer.group_send(broadcast.task_group("app.model.2"), news("app.model.2"))
    await asyncio.wait_for(two.got_news.wait(), timeout=5)
    assert one.taken == [] and two.taken == [news("app.model.2")]
    await hub.leave("app.model.1", one)
    await hub.leave("app.model.2", two)


async def test_leaving_keeps_the_membership_while_another_socket_watches():
    layer = Layer()
    hub = FanOutHub(layer)
    first, second = Listener(), Listener()
    await hub.join(KEY, first)
    await hub.join(KEY, second)
    await hub.leave(KEY, first)
    assert layer.members(GROUP) == {hub.channel} and ("discard", GROUP) not in layer.changes
    assert list(hub.listeners[KEY]) == [second]
    await hub.leave(KEY, second)


async def test_the_last_socket_of_a_task_ends_its_membership():
    layer = Layer()
    hub = FanOutHub(layer)
    one, two = Listener(), Listener()
    await hub.join("app.model.1", one)
    await hub.join("app.model.2", two)
    reader, channel = hub._reader, hub.channel
    await hub.leave("app.model.1", one)
    assert layer.members(GROUP) == set() and "app.model.1" not in hub.listeners
    assert hub._reader is reader and not reader.done() and hub.channel == channel  # still read
    await hub.leave("app.model.2", two)


async def test_the_last_socket_of_the_hub_stops_the_reader_and_retires_the_channel():
    layer = Layer()
    hub = FanOutHub(layer)
    listener = Listener()
    await hub.join(KEY, listener)
    reader = hub._reader
    await hub.leave(KEY, listener)
    assert hub.listeners == {} and hub.channel is None and hub._reader is None
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert layer.changes == [("add", GROUP), ("discard", GROUP)]


async def test_a_socket_that_comes_back_at_once_is_joined_again():
    """Leaving forgets when the membership was made: the next join makes it, however soon."""
    layer = Layer()
    hub = FanOutHub(layer)
    one, two = Listener(), Listener()
    await hub.join("app.model.2", two)  # keeps the hub reading
    await hub.join(KEY, one)
    await hub.leave(KEY, one)
    await hub.join(KEY, one)
    assert layer.changes.count(("add", GROUP)) == 2 and layer.members(GROUP) == {hub.channel}
    await layer.group_send(GROUP, news())
    await asyncio.wait_for(one.got_news.wait(), timeout=5)
    await hub.leave(KEY, one)
    await hub.leave("app.model.2", two)


async def test_a_new_socket_after_the_hub_went_idle_gets_a_new_channel_and_reader():
    layer = Layer()
    hub = FanOutHub(layer)
    listener = Listener()
    await hub.join(KEY, listener)
    old_channel = hub.channel
    await hub.leave(KEY, listener)
    await hub.join(KEY, listener)
    assert hub.channel not in (None, old_channel) and layer.members(GROUP) == {hub.channel}
    await layer.group_send(GROUP, news())
    await asyncio.wait_for(listener.got_news.wait(), timeout=5)
    await hub.leave(KEY, listener)


async def test_leaving_twice_or_unknown_changes_nothing():
    layer = Layer()
    hub = FanOutHub(layer)
    listener, stranger = Listener(), Listener()
    await hub.join(KEY, listener)
    await hub.leave(KEY, stranger)
    await hub.leave("app.model.9", stranger)
    assert layer.changes == [("add", GROUP)] and hub.channel is not None
    await hub.leave(KEY, listener)
    await hub.leave(KEY, listener)
    assert layer.changes == [("add", GROUP), ("discard", GROUP)]


# -- delivering --------------------------------------------------------------------------------


async def test_news_goes_to_the_sockets_of_its_task_only_in_join_order():
    hub = FanOutHub(Layer())
    order = []

    class Ordered(Listener):
        async def take_news(self, message):
            order.append(self)
            await super().take_news(message)

    first, second, elsewhere = Ordered(), Ordered(), Ordered()
    hub.listeners = {KEY: {first: None, second: None}, "app.model.2": {elsewhere: None}}
    await hub.deliver(news())
    assert order == [first, second] and elsewhere.taken == []
    await hub.deliver({"type": "stream.events", "events": []})  # no task: nobody
    assert order == [first, second]


async def test_the_socket_says_whether_each_message_can_go_out_at_once():
    """It is asked about the message itself: in step for seq 1, not for a batch after a gap."""

    class InStep(Listener):
        def ready_for(self, message):
            return message["events"][0][0] == 1

    hub = FanOutHub(Layer())
    listener = InStep(release=asyncio.Event())
    hub.listeners[KEY] = {listener: None}
    await asyncio.wait_for(hub.deliver(news(seq=5)), timeout=5)
    assert len(hub._deferred) == 1  # waits for its release in a task of its own
    assert listener.taken == []
    listener.release.set()
    await hub.deliver(news(seq=1))  # inline: taken before the deferred one gets its turn
    assert listener.taken == [news(seq=1)]
    await asyncio.wait_for(asyncio.gather(*hub._deferred), timeout=5)
    assert listener.taken == [news(seq=1), news(seq=5)]


async def test_a_socket_that_must_wait_does_not_hold_up_the_others():
    hub = FanOutHub(Layer())
    release = asyncio.Event()
    waiting, ready = Listener(ready=False, release=release), Listener(ready=True)
    hub.listeners[KEY] = {waiting: None, ready: None}
    await asyncio.wait_for(hub.deliver(news()), timeout=5)
    assert ready.taken == [news()] and waiting.taken == [] and len(hub._deferred) == 1
    release.set()
    await asyncio.wait_for(asyncio.gather(*hub._deferred), timeout=5)
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert waiting.taken == [news()] and hub._deferred == set()


async def test_a_socket_failing_inline_is_logged_and_the_rest_still_get_the_news(caplog):
    hub = FanOutHub(Layer())
    healthy = Listener()
    hub.listeners[KEY] = {Broken(): None, healthy: None}
    await hub.deliver(news())
    assert healthy.taken == [news()]
    assert f"delivering news failed key={KEY}" in caplog.text


async def test_a_socket_failing_in_its_own_task_is_logged(caplog):
    hub = FanOutHub(Layer())
    hub.listeners[KEY] = {Broken(ready=False): None}
    await hub.deliver(news())
    deferred = list(hub._deferred)
    await asyncio.wait(deferred, timeout=5)
    await asyncio.sleep(0)
    assert hub._deferred == set()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["delivering news failed"]
    assert errors[0].exc_info[1].args == ("socket went wrong",)


async def test_a_cancelled_delivery_task_is_not_an_error(caplog):
    hub = FanOutHub(Layer())
    hub.listeners[KEY] = {Listener(ready=False, release=asyncio.Event()): None}
    await hub.deliver(news())
    (deferred,) = hub._deferred
    deferred.cancel()
    await asyncio.wait([deferred], timeout=5)
    await asyncio.sleep(0)
    assert hub._deferred == set()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- one hub per event loop and layer; the socket's feed -----------------------------------------


async def test_one_hub_per_layer_on_an_event_loop():
    layer, other = Layer(), Layer()
    assert hub_for(layer) is hub_for(layer)
    assert hub_for(other) is not hub_for(layer) and hub_for(other).layer is other


# -- when the layer fails ----------------------------------------------------------------------


def test_tries_back_off_from_soon_to_twice_a_second():
    pauses = backoff()
    firsts = [next(pauses) for _ in range(6)]
    assert firsts[0] == REPAIR_FIRST_SECONDS == 0.05
    assert firsts[:4] == [0.05, 0.1, 0.2, 0.4]
    assert firsts[4:] == [REPAIR_MAX_SECONDS] * 2 == [0.5, 0.5]


async def test_a_failed_discard_is_kept_and_retried_until_it_goes_through():
    layer = Layer()
    hub = FanOutHub(layer)
    other, listener = Listener(), Listener()
    await hub.join("app.model.2", other)  # keeps the hub and its channel
    await hub.join(KEY, listener)
    layer.failing_discards = 2
    await hub.leave(KEY, listener)
    assert layer.members(GROUP) == {hub.channel}  # still there: the discard failed
    await asyncio.wait_for(hub._repair, timeout=5)
    assert layer.members(GROUP) == set() and hub._stale == {}
    assert layer.changes.count(("discard", GROUP)) == 3
    await hub.leave("app.model.2", other)


async def test_a_membership_made_again_is_not_undone_by_the_repair():
    layer = Layer()
    hub = FanOutHub(layer)
    other, listener = Listener(), Listener()
    await hub.join("app.model.2", other)
    await hub.join(KEY, listener)
    layer.failing_discards = 1
    await hub.leave(KEY, listener)
    await hub.join(KEY, listener)  # back before the repair ran, with the same channel
    await asyncio.wait_for(hub._repair, timeout=5)
    assert layer.members(GROUP) == {hub.channel} and hub._stale == {}
    await layer.group_send(GROUP, news())
    await asyncio.wait_for(listener.got_news.wait(), timeout=5)
    await hub.leave(KEY, listener)
    await hub.leave("app.model.2", other)


async def test_a_half_made_membership_is_taken_out_on_leave():
    layer = Layer(fail=True)
    hub = FanOutHub(layer)
    other, listener = Listener(), Listener()
    layer.fail = False
    await hub.join("app.model.2", other)
    layer.fail = True
    await hub.join(KEY, listener)  # the add failed
    layer.fail = False
    await hub.leave(KEY, listener)
    assert ("discard", GROUP) in layer.changes  # the half-made add is taken out all the same
    assert hub._repair is None
    await hub.leave("app.model.2", other)


async def test_after_the_layer_was_away_every_membership_is_made_again():
    """A failed receive (Redis restarted and forgot the groups): once the layer answers, the hub
    adds its channel to every watched task's group again."""
    failed = asyncio.Event()

    class Restarting(Layer):
        async def receive(self, channel):
            if not failed.is_set():
                failed.set()
                self.groups.clear()  # what a restarted Redis remembers
                raise ConnectionError("the layer is away")
            return await super().receive(channel)

    layer = Restarting()
    hub = FanOutHub(layer)
    one, two = Listener(), Listener()
    await hub.join(KEY, one)
    await hub.join("app.model.2", two)
    await asyncio.wait_for(failed.wait(), timeout=5)
    await asyncio.sleep(0)  # the reader reports the failure
    await asyncio.wait_for(hub._restore, timeout=5)
    assert layer.members(GROUP) == {hub.channel}
    assert layer.members(broadcast.task_group("app.model.2")) == {hub.channel}
    await layer.group_send(GROUP, news())
    await asyncio.wait_for(one.got_news.wait(), timeout=5)
    await hub.leave(KEY, one)
    await hub.leave("app.model.2", two)



class Restarting(Layer):
    """Its first receive fails as a restarted Redis would (the groups forgotten); its next
    ``failing_adds`` group_adds fail too."""

    def __init__(self, failing_adds: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.restarted = asyncio.Event()
        self.failing_adds = failing_adds

    async def receive(self, channel):
        if not self.restarted.is_set():
            self.restarted.set()
            self.groups.clear()
            raise ConnectionError("the layer is away")
        return await super().receive(channel)

    async def group_add(self, group, channel):
        if self.restarted.is_set() and self.failing_adds:
            self.failing_adds -= 1
            self.changes.append(("add", group))
            raise ConnectionError("still away")
        await super().group_add(group, channel)


@pytest.mark.django_db(transaction=True, available_apps=["streamapp", "tests.testapp"])
async def test_after_the_layer_was_away_each_socket_rechecks_its_task_from_the_database():
    """What was published while the layer was away is lost: each socket is handed its task's
    position, read once the memberships are back, to repair from."""
    task = await StepTask.objects.acreate(status="running", revision=3, last_seq=7)
    layer = Restarting(failing_adds=1)  # the first try to remake fails: tried again
    hub = FanOutHub(layer)
    first, second, elsewhere = Rechecking(), Rechecking(), Rechecking()
    await hub.join(task.task_key, first)
    await hub.join(task.task_key, second)
    await hub.join("app.model.9", elsewhere)  # no such task: nothing to re-check
    await asyncio.wait_for(layer.restarted.wait(), timeout=5)
    await asyncio.sleep(0)
    await asyncio.wait_for(hub._restore, timeout=5)
    await asyncio.wait_for(asyncio.gather(first.recheck_done.wait(),
                                          second.recheck_done.wait()), timeout=5)
    expected = [(task.task_key, Position(revision=3, status="running", seq=7))]
    assert first.rechecked == expected and second.rechecked == expected
    assert elsewhere.rechecked == []
    assert layer.members(broadcast.task_group(task.task_key)) == {hub.channel}
    await hub.leave(task.task_key, first)
    await hub.leave(task.task_key, second)
    await hub.leave("app.model.9", elsewhere)
