"""Counters of what the client's receive task did with each datagram."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(slots=True)
class ClientStats:
    """Counters; ``received`` is ``accepted`` plus the five kinds of discard."""

    #: replies counted towards a request
    accepted: int = 0
    #: wrong magic, size, encoding or envelope; or, for a request in flight, JSON or fields
    malformed: int = 0
    #: no msg, salt or hmac member; or, for a request in flight, a wrong HMAC
    bad_signature: int = 0
    #: for no outstanding request (unknown, expired, or finished: late); read no
    #: further than its envelope, so its signature is not checked
    unknown_salt: int = 0
    #: authentic, but from an address the request was not sent to
    unexpected_peer: int = 0
    #: authentic, but from a peer that already counted for that request
    duplicate: int = 0
    #: the socket reported an error instead of a datagram (e.g. ICMP unreachable)
    socket_errors: int = 0
    #: datagrams read from the socket
    received: int = 0
    #: requests whose datagram could not be sent to one peer
    send_errors: int = 0
    #: requests forgotten by expiry
    expired: int = 0
    #: exceptions raised by the callback (logged, then ignored)
    callback_errors: int = 0
    #: callbacks that took longer than ``SLOW_CALLBACK`` (5 ms) to return
    slow_callbacks: int = 0
    #: datagrams sent again to peers that had not answered
    retransmitted: int = 0
    #: retransmission rounds put off: the client's socket held unread datagrams, or
    #: (adaptive only) the event loop was saturated
    deferred: int = 0
    #: retransmissions not sent: the peer was busy answering, its window full
    held_back: int = 0
    #: peers outside a query's sample asked because the sample stayed silent
    hedged: int = 0
    #: requests refused because ``max_outstanding`` were held already
    refused: int = 0
    #: queries (and streams) that waited, parked, for room in a full window:
    #: once each, whether they were sent in the end or not
    waited: int = 0
    #: times a peer's window shrank: a retransmission to it fell due (sent or
    #: held back), or a request to it ended at its deadline unanswered; once a
    #: round, never below the window's minimum (see :class:`AdmissionPolicy`)
    window_cuts: int = 0
    #: queries never sent: the peers' windows stayed full until their deadline
    saturated: int = 0
    #: peers a query left out: their windows were full and they answered nothing
    skipped: int = 0
    _discard_cache: tuple[int, tuple[int, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def discarded(self) -> int:
        """Datagrams read but not counted towards any request."""
        return (
            self.malformed
            + self.bad_signature
            + self.unknown_salt
            + self.unexpected_peer
            + self.duplicate
        )

    def discard_counts(self) -> tuple[int, ...]:
        """The counters of :data:`DISCARD_REASONS`, in that order.

        Taken by every query, so one tuple serves until a datagram is
        discarded: no allocation per query while none are.
        """
        # Every datagram read is accepted or discarded: their difference
        # changes with each discard (socket errors are counted apart).
        key = self.received - self.accepted + self.socket_errors
        cached = self._discard_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        counts = (
            self.malformed,
            self.bad_signature,
            self.unknown_salt,
            self.unexpected_peer,
            self.duplicate,
            self.socket_errors,
        )
        self._discard_cache = (key, counts)
        return counts

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.repr}


#: What a datagram read can come to instead of an accepted reply, in the
#: order of :meth:`ClientStats.discard_counts`.
DISCARD_REASONS = (
    "malformed",
    "bad_signature",
    "unknown_salt",
    "unexpected_peer",
    "duplicate",
    "socket_errors",
)
