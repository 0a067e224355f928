"""A nursery for background tasks that live exactly as long as the caller's block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def background_tasks() -> AsyncIterator[trio.Nursery]:
    """Yield a nursery whose tasks are cancelled when the caller's block ends.

    The nursery collects everything: the block's own exception and those of
    its tasks. A lone one comes out as itself, not wrapped in an
    ExceptionGroup, so callers of a context manager built on this catch
    exactly what their block raised; several come out as the group, so none
    is lost (as trio-websocket's ``open_websocket`` does).
    """
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            lone = group.exceptions[0]
            # Raised from here, it would take the group as its context: keep
            # the one it had ("During handling of ..." stays in tracebacks).
            context, suppress = lone.__context__, lone.__suppress_context__
            try:
                raise lone
            finally:
                lone.__context__, lone.__suppress_context__ = context, suppress
                del lone, group, context  # no reference cycle through the traceback
        raise
