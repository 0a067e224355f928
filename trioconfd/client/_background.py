"""A nursery for background tasks that live exactly as long as the caller's block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def background_tasks() -> AsyncIterator[trio.Nursery]:
    """Yield a nursery whose tasks are cancelled when the caller's block ends.

    An exception from the caller's block is held until the nursery has closed
    and then raised as itself, not wrapped in an ExceptionGroup, so callers of
    a context manager built on this catch exactly what their block raised.
    """
    caller_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            yield nursery
        except BaseException as exc:
            caller_error = exc
        finally:
            nursery.cancel_scope.cancel()
    if caller_error is not None:
        try:
            raise caller_error
        finally:
            caller_error = None  # no reference cycle through the traceback
