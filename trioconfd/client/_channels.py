"""Reply channels for requests in flight, kept for reuse once their request ends."""

from __future__ import annotations

import trio

from ..protocol import PeerReply
from ._entry import ReplyReceiver, ReplySender

# Channel pairs kept for reuse, per buffer size. Opening a pair costs about
# 6 µs, a third of a query's own work; a pooled pair costs nothing.
_POOL_LIMIT = 512

ChannelPair = tuple[ReplySender, ReplyReceiver]


class ChannelPool:
    """Memory channel pairs by buffer size: opened when none is spare, reused after."""

    __slots__ = ("_closed", "_spare")

    def __init__(self) -> None:
        self._spare: dict[int, list[ChannelPair]] = {}
        self._closed = False

    def open(self, capacity: int) -> ChannelPair:
        """A memory channel with room for ``capacity`` replies, from the pool if one is free."""
        spare = self._spare.get(capacity)
        if spare:
            return spare.pop()
        return trio.open_memory_channel[PeerReply](capacity)

    def recycle(
        self, pair: ChannelPair, capacity: int, unread: int, *, shared: bool = True
    ) -> None:
        """Take back a finished route's channel, emptied of its ``unread`` replies.

        A channel some task still waits on is closed instead, which ends that
        wait at once (``trio.ClosedResourceError``): reused, it would hand
        that task the next request's replies. Shared (a stream's), what its
        buffer holds is emptied: a reply handed straight to a reader that
        has not run yet is in neither count (that reader has it, and its next
        read finds the request ended). ``shared=False`` says that only the
        task recycling it ever read it (a query's), so none can wait on it
        now: its statistics are not read, and ``unread`` is what it holds.
        """
        if self._closed:
            return  # the client closed its channels: they are no use to anyone
        receiver = pair[1]
        if shared:
            statistics = receiver.statistics()
            if statistics.tasks_waiting_receive:
                receiver.close()
                return
            unread = statistics.current_buffer_used
        for _ in range(unread):
            receiver.receive_nowait()
        spare = self._spare.get(capacity)
        if spare is None:  # (not setdefault: its empty list would be made every time)
            spare = self._spare[capacity] = []
        if len(spare) < _POOL_LIMIT:
            spare.append(pair)

    def close(self) -> None:
        """Keep nothing more: the client has closed."""
        self._closed = True
        self._spare.clear()
