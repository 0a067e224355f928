"""A request in the client's table, and how a task waits for its replies."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import trio

from ._aggregate import Address, PeerReply, ReplyAggregator
from ._messages import ConfdRequest
from ._retry import RetryPolicy


@dataclass(slots=True, eq=False)
class Outstanding:
    """A request in the table: where it went, who has answered, who is waiting.

    A task that reads the replies (a query or a stream) parks itself here and
    the receive task reschedules it directly: no channel, no extra task.
    """

    request: ConfdRequest
    args: Any
    # A short list is smaller than a set and as quick to search; a long one is a set.
    targets: list[Address] | set[Address]
    expiry: float
    # Shared and empty until the first reply: most requests in flight have none.
    answered: set[Address] | frozenset[Address] = frozenset()
    # Replies not yet taken by the reading task; None when nobody reads them.
    # (A list: it rarely holds more than one reply, and is small while empty.)
    inbox: list[PeerReply] | None = None
    # The task parked in next_reply, if any.
    reader: trio.lowlevel.Task | None = None
    # Set by the timer task when the deadline has passed.
    timed_out: bool = False
    # Created by wait_for_reply while it waits; set (and dropped) on any change.
    changed: trio.Event | None = None
    # Retransmission, for requests read by a query or a stream.
    aggregator: ReplyAggregator | None = None
    policy: RetryPolicy | None = None
    sent_at: float = 0.0
    deadline: float = math.inf
    retransmissions: int = 0
    next_retry: float = math.inf
    # Hedging asks no more peers than this.
    capacity: int = 0

    def deliver(self, reply: PeerReply) -> None:
        """Count ``reply`` and hand it to whoever reads or waits (the receive task calls this)."""
        if isinstance(self.answered, set):
            self.answered.add(reply.address)
        else:
            self.answered = {reply.address}
        if self.inbox is not None:
            self.inbox.append(reply)
            if self.reader is not None:
                trio.lowlevel.reschedule(self.reader)
                self.reader = None
        self.wake()

    def wake(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def ask(self, address: Address) -> None:
        """Add a peer the request goes to (hedging)."""
        if isinstance(self.targets, set):
            self.targets.add(address)
        else:
            self.targets.append(address)

    def end_by_deadline(self) -> None:
        """The deadline has passed: wake the reader to an empty hand (the timer task calls this)."""
        self.timed_out = True
        if self.reader is not None:
            trio.lowlevel.reschedule(self.reader)
            self.reader = None

    async def next_reply(self) -> PeerReply | None:
        """The next reply, parking until one comes; None once the deadline has passed.

        The deadline is kept by the client's timer task rather than a cancel
        scope per wait, which would cost more than the rest of a query.
        Cancelling the caller still stops the wait at once.
        """
        assert self.inbox is not None
        if not self.inbox:
            if self.timed_out:
                await trio.lowlevel.checkpoint()
                return None
            self.reader = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
            if not self.inbox:
                return None
        return self.inbox.pop(0)

    def _abort_wait(self, _: Any) -> trio.lowlevel.Abort:
        self.reader = None
        return trio.lowlevel.Abort.SUCCEEDED
