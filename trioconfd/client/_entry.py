"""An entry of the routing table: one request in flight, as the receive task sees it."""

from __future__ import annotations

import math
from typing import Any

import trio

from ..protocol import Address, ConfdRequest, PeerReply
from ..protocol._aggregate import Answered

ReplySender = trio.MemorySendChannel[PeerReply]
ReplyReceiver = trio.MemoryReceiveChannel[PeerReply]

#: Targets up to this many are a list (smaller than a set, and as quick to search).
SHORT_TARGETS = 8


class RoutingEntry:
    """A request in the routing table: where it went, who has answered, where replies go.

    A query's or a stream's entry hands each reply to the memory channel its
    task reads (``replies``). Ganeti's ``send_request`` entries, which have
    no reader, are :class:`~trioconfd.client._parity.SentRequest`.
    """

    __slots__ = ("answered", "args", "replies", "request", "targets")

    #: Replies that come at this time (Trio's clock) or later are late, and not
    #: accepted: a stream's, past its deadline (see RequestInFlight).
    accepts_until: float = math.inf

    def __init__(
        self,
        request: ConfdRequest,
        targets: list[Address],
        replies: ReplySender | None,
        args: Any = None,
    ) -> None:
        self.request = request
        self.targets: list[Address] | set[Address] = (
            targets if len(targets) <= SHORT_TARGETS else set(targets)
        )
        # Who has answered: a tuple while few (quicker to make and search), then a set.
        self.answered: Answered = ()
        self.replies = replies
        #: The ``extra_args`` of its upcalls (Ganeti's ``args``).
        self.args = args

    def ask(self, address: Address) -> None:
        """Add a peer the request goes to (hedging)."""
        if isinstance(self.targets, set):
            self.targets.add(address)
        else:
            self.targets.append(address)

    def deliver(self, peer_reply: PeerReply) -> None:
        """Hand on an accepted reply: to the channel (room for one reply per peer
        that may be asked, and each peer counts once: this never blocks)."""
        assert self.replies is not None
        self.replies.send_nowait(peer_reply)

    def end(self) -> None:
        """The client is closing: the reader gets ``EndOfChannel``."""
        if self.replies is not None:
            self.replies.close()
