"""Watching a query's answer: a quorum query each interval, a result for each change."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from ..protocol import (
    ConfdArgumentError,
    ConfdRequest,
    Query,
    QueryResult,
    RequestType,
    RetryPolicy,
    pack_request,
)
from ..protocol._numbers import as_number, shown
from ._arguments import as_request, as_retry, check_coverage, check_timeout

if TYPE_CHECKING:
    from ._client import ConfdClient


def check_interval(interval: float) -> float:
    """``interval`` in seconds, if it is a finite number above 0."""
    rule = "a number of seconds above 0, and finite"
    seconds = as_number("interval", interval, rule)
    if not 0 < seconds < math.inf:
        raise ConfdArgumentError(f"interval must be {rule}, not {shown(interval)}")
    return seconds


class Watch:
    """The changes to one query's trusted verdict, as an async iterator; see
    :meth:`ConfdClient.watch`.

    A plain iterator, not an async generator: a loop may be left at any
    point (``break``, an exception, a cancel scope) with nothing left to
    clean up, as nothing is held between asks.
    """

    def __init__(
        self,
        client: ConfdClient,
        type_or_request: ConfdRequest | RequestType | int,
        query: Query,
        *,
        interval: float,
        coverage: int,
        timeout: float | None,
        retry: RetryPolicy | None,
    ) -> None:
        self._client = client
        self._ask = (type_or_request, query)
        self._options = (coverage, timeout, retry)
        self.interval = check_interval(interval)
        # What each ask would refuse, refused now (the query packed: one JSON
        # cannot hold, or too big for the daemon).
        pack_request(as_request(type_or_request, query), client._router.key)
        check_timeout(timeout)
        check_coverage(coverage, len(client.peers))
        if retry is not None:
            as_retry(retry)
        #: the last verdict yielded (None before the first)
        self.last: QueryResult | None = None
        #: the verdict of the latest ask, a change or not, a quorum or not
        self.verdict: QueryResult | None = None
        self._next_at: float | None = None

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> QueryResult:
        coverage, timeout, retry = self._options
        while True:
            if self._next_at is None:
                self._next_at = trio.current_time()
            else:
                # Until the next ask, or the client's close: the ask then
                # raises ConfdClientClosedError at once, not an interval on.
                with trio.move_on_at(self._next_at):
                    await self._client._router.closing.wait()
            result = await self._client.query(
                *self._ask, coverage=coverage, timeout=timeout, retry=retry
            )
            # The next ask: an interval after this one was due, or now if it took longer.
            self._next_at = max(self._next_at + self.interval, trio.current_time())
            self.verdict = result
            if _is_news(result, self.last):
                self.last = result
                return result


def _is_news(result: QueryResult, last: QueryResult | None) -> bool:
    """Whether ``result`` is a trusted verdict that changes what was last yielded."""
    if not result.quorum_reached or result.best is None:
        return False  # nothing trusted to tell
    if last is None or last.best is None:
        return True
    if (
        result.ok
        and result.serial is not None
        and last.serial is not None
        and result.serial < last.serial
    ):
        # Older than what was seen: a stale quorum, not a change. (An error
        # reply carries serial 0 whatever the configuration: a name gone
        # from it is news.)
        return False
    if result.serial == last.serial and not result.consistent:
        # Replies that disagree at one serial: which wins is luck, not news.
        return False
    return (result.serial, result.status, result.answer) != (last.serial, last.status, last.answer)
