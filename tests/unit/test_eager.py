"""eager.start: a coroutine runs at once; a task carries on only one that waits."""

from __future__ import annotations

import asyncio

import pytest

from streamapp import eager


async def test_a_coroutine_that_does_not_wait_ends_before_start_returns_and_leaves_no_task():
    done = []

    async def work():
        done.append("sent")

    assert eager.start(work(), name="w") is None
    assert done == ["sent"]


async def test_one_that_waits_goes_on_in_a_task_with_the_futures_results():
    first, second = asyncio.get_running_loop().create_future(), asyncio.Event()
    seen = []

    async def work():
        seen.append(await first)
        await asyncio.sleep(0)  # a bare yield
        await second.wait()
        seen.append("end")

    task = eager.start(work(), name="w")
    assert task is not None and task.get_name() == "w" and seen == []
    first.set_result(1)
    await asyncio.sleep(0)
    second.set()
    await asyncio.wait_for(task, timeout=5)
    assert seen == [1, "end"]


async def test_an_exception_before_the_first_wait_is_the_callers_and_after_it_the_tasks():
    async def fails_now():
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        eager.start(fails_now(), name="w")

    later = asyncio.get_running_loop().create_future()

    async def fails_later():
        try:
            await later
        except KeyError:
            raise ValueError("later") from None

    task = eager.start(fails_later(), name="w")
    later.set_exception(KeyError("k"))
    with pytest.raises(ValueError, match="later"):
        await asyncio.wait_for(task, timeout=5)


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    blocked = asyncio.Event()
    cleaned = []

    async def work():
        try:
            await blocked.wait()
        finally:
            cleaned.append("finally")

    task = eager.start(work(), name="w")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def test_a_cancel_that_came_when_the_future_was_already_done_still_reaches_it():
    gate = asyncio.get_running_loop().create_future()
    steps = []

    async def work():
        try:
            steps.append(await gate)
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    task = eager.start(work(), name="w")
    await asyncio.sleep(0)  # the task waits on the gate
    gate.set_result("opened")
    task.cancel()  # before the task woke: the future cannot be cancelled, the task is
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["cancelled"]  # as a plain task's coroutine would see it


async def test_a_future_that_failed_or_was_cancelled_is_seen_as_such():
    failed, cancelled = (asyncio.get_running_loop().create_future() for _ in range(2))
    seen = []

    async def work():
        for future in (failed, cancelled):
            try:
                await future
            except BaseException as exc:  # noqa: BLE001
                seen.append(type(exc).__name__)

    task = eager.start(work(), name="w")
    failed.set_exception(KeyError("k"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.wait_for(task, timeout=5)
    assert seen == ["KeyError", "CancelledError"] and not task.cancelled()


async def test_a_task_cancelled_before_its_first_step_closes_the_coroutine():
    cleaned = []

    async def work():
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally")

    task = eager.start(work(), name="w")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]
