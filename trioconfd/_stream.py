"""The replies to one request, as an async iterator."""

from __future__ import annotations

import trio

from ._aggregate import PeerReply, QueryResult, ReplyAggregator
from ._messages import ConfdRequest
from ._outstanding import Outstanding


class ReplyStream:
    """The replies to one request, as they arrive; see :meth:`ConfdClient.request`.

    Iteration ends when every peer asked has replied or the deadline passes
    (then :attr:`timed_out` is True). :meth:`result` gives the verdict so far.
    """

    def __init__(self, entry: Outstanding, aggregator: ReplyAggregator, deadline: float) -> None:
        self.request: ConfdRequest = entry.request
        self.deadline = deadline
        self.timed_out = False
        self._entry = entry
        self._aggregator = aggregator

    @property
    def sent(self) -> int:
        """Peers asked so far (hedges included)."""
        return self._aggregator.sent

    @property
    def needed(self) -> int:
        return self._aggregator.needed

    @property
    def quorum_reached(self) -> bool:
        return self._aggregator.quorum_reached

    @property
    def replies(self) -> list[PeerReply]:
        return list(self._aggregator.replies)

    def result(self) -> QueryResult:
        """The verdict on the replies received so far."""
        return self._aggregator.result(timed_out=self.timed_out)

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> PeerReply:
        if self.timed_out or self._aggregator.complete:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        peer_reply = await self._entry.next_reply()
        if peer_reply is None:
            self.timed_out = True
            raise StopAsyncIteration
        self._aggregator.add_reply(peer_reply)
        return peer_reply
