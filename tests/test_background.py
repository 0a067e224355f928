"""The nursery behind every ``async with`` of the package: what its block raises comes out."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioconfd._tasks import background_tasks


async def test_the_blocks_own_exception_comes_out_as_itself() -> None:
    with pytest.raises(KeyError, match="the block"):  # noqa: PT012
        async with background_tasks() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise KeyError("the block's")


async def test_a_background_failure_comes_out_as_itself() -> None:
    async def fail() -> None:
        raise RuntimeError("the task's")

    with pytest.raises(RuntimeError, match="the task"):  # noqa: PT012
        async with background_tasks() as nursery:
            nursery.start_soon(fail)
            await trio.sleep_forever()


async def test_both_failing_at_once_loses_neither() -> None:
    async def fail_when(event: trio.Event) -> None:
        await event.wait()
        raise RuntimeError("the task's")

    event = trio.Event()
    with pytest.raises(ExceptionGroup) as caught:  # noqa: PT012
        async with background_tasks() as nursery:
            nursery.start_soon(fail_when, event)
            await trio.testing.wait_all_tasks_blocked()
            event.set()
            try:
                await trio.sleep_forever()
            finally:
                raise KeyError("the block's")
    assert caught.group_contains(RuntimeError, match="the task")
    assert caught.group_contains(KeyError, match="the block")


async def test_a_quiet_block_cancels_its_tasks() -> None:
    async with background_tasks() as nursery:
        nursery.start_soon(trio.sleep_forever)
    # (and returns: the task was cancelled)


async def test_a_lone_exception_keeps_its_own_context() -> None:
    with pytest.raises(RuntimeError) as caught:  # noqa: PT012
        async with background_tasks():
            try:
                int("x")
            except ValueError:
                raise RuntimeError("handling failed")  # noqa: B904 - the context is the point
    assert isinstance(caught.value.__context__, ValueError)
    assert not caught.value.__suppress_context__
