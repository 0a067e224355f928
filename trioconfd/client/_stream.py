"""A request's replies read as they come (:meth:`ConfdClient.request`): a stream.

The task iterating a :class:`ReplyStream` reads the request's memory channel
as a query does (:class:`~trioconfd.client._gather.RequestInFlight`), under a
cancel scope until the next send due or the deadline, and hands each reply on
as it comes instead of waiting for the quorum.
"""

from __future__ import annotations

import trio
import trio.lowlevel

from ..protocol import ConfdRequest, PeerReply, QueryResult
from ._gather import RequestInFlight


class ReplyStream:
    """The replies to one request, as they arrive; see :meth:`ConfdClient.request`.

    Iteration ends when every peer asked has replied or the deadline passes
    (then :attr:`timed_out` is True). :meth:`result` gives the verdict so far.
    Silent peers are asked again while the stream waits. Several tasks may
    read it: each reply goes to one of them, and all stop at the end.
    """

    def __init__(self, in_flight: RequestInFlight) -> None:
        self.request: ConfdRequest = in_flight.request
        self.deadline = in_flight.deadline
        self.timed_out = False
        self._exchange = in_flight
        self._aggregator = in_flight.aggregator
        # Replies result() counted before any reader took them: read first.
        self._counted: list[PeerReply] = []
        in_flight.read_as_a_stream()  # by whichever task iterates it

    @property
    def sent(self) -> int:
        """Peers asked so far (hedges included; 0 if never sent: the client was saturated)."""
        return 0 if self._exchange.unsent else self._aggregator.sent

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
        """The verdict on every reply accepted so far (read or not: those not read
        yet are still yielded). None is accepted past the deadline: from then
        on (read or not), it is the deadline's verdict, timed out if short of
        the quorum."""
        self._read_out()
        in_flight = self._exchange
        timed_out = not self._aggregator.quorum_reached and (
            self.timed_out or in_flight.past_deadline()
        )
        return in_flight.result(timed_out=timed_out)

    def __aiter__(self) -> ReplyStream:
        return self

    def _all_replied(self) -> bool:
        # (Complete with nothing sent: its deadline came first; it times out.)
        return self._aggregator.complete and self._aggregator.sent > 0

    def _read_out(self) -> None:
        """What came meanwhile, first, as a query does: a peer whose reply is here
        is not asked again, and copies refused (a send cut short by the
        reader's own scope) leave the channel before anything more is sent,
        to make room for the replies."""
        in_flight = self._exchange
        while (arrived := in_flight.receive_arrived()) is not None:
            self._counted.append(arrived)
        if self._aggregator.complete:
            in_flight.stop_other_readers()

    async def __anext__(self) -> PeerReply:
        in_flight = self._exchange
        if self._counted:
            in_flight.check_open()
            await trio.lowlevel.checkpoint()
            if self._counted:  # another reader may have taken it meanwhile
                return self._counted.pop(0)
        if self.timed_out or self._all_replied():
            await trio.lowlevel.checkpoint()  # a checkpoint, as every async call should be
            raise StopAsyncIteration
        while True:
            # An ended request sends nothing more (its block may have exited
            # as this reader woke to send).
            in_flight.check_open()
            # The next reply, until the next send due or the deadline.
            with trio.move_on_at(in_flight.deadline) as waiting:
                self._read_out()
                await in_flight.send_due()
                if self._counted:
                    return self._counted.pop(0)
                if self._all_replied():  # another reader took the last as this one sent
                    raise StopAsyncIteration
                waiting.deadline = in_flight.wake_at
                peer_reply = await in_flight.receive()
                if peer_reply is None:  # another reader took the last one
                    raise StopAsyncIteration
                if self._aggregator.complete:
                    in_flight.stop_other_readers()
                return peer_reply
            # Read out before a send the deadline cut short; or a reader that
            # took the last reply did meanwhile.
            if self._counted:
                return self._counted.pop(0)
            if self._all_replied():
                raise StopAsyncIteration
            if trio.current_time() >= in_flight.deadline:
                # What was accepted before the deadline still comes out.
                arrived = in_flight.receive_arrived()
                if arrived is not None:
                    return arrived
                self.timed_out = True
                raise StopAsyncIteration
