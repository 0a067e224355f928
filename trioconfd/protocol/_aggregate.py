"""Gathering the replies to one request into a verdict (sans-IO)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from ._constants import ReplyStatus
from ._frozen import quick_constructor
from ._messages import ConfdReply
from ._quorum import QuorumRule, needed_replies, quorum_of

_OK = ReplyStatus.OK

#: A peer's socket address as the client knows it: (IP literal, port).
Address: TypeAlias = tuple[str, int]
#: Peers that have answered a request: a tuple while few, then a set (:func:`with_answered`).
Answered: TypeAlias = tuple[Address, ...] | set[Address]

#: Who has answered is a tuple up to this many peers (quicker to make and to
#: search than a set, and a request most often has one or a few), then a set.
FEW_ANSWERED = 8


def with_answered(answered: Answered, peer: Address) -> Answered:
    """``answered`` with ``peer`` added (not there yet): a set is added to, a tuple grown
    (or, past :data:`FEW_ANSWERED`, made a set)."""
    if isinstance(answered, set):
        answered.add(peer)
        return answered
    if len(answered) < FEW_ANSWERED:
        return (*answered, peer)
    return {*answered, peer}


def without_answered(answered: Answered, peers: Collection[Address]) -> Answered:
    """``answered`` less ``peers``: a set is taken from, a tuple made anew."""
    if isinstance(answered, set):
        answered.difference_update(peers)
        return answered
    return tuple(peer for peer in answered if peer not in peers)


def format_address(address: Address) -> str:
    """``IP:PORT``, or ``[IPv6]:PORT``: how peers are written on a command line."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PeerReply(NamedTuple):
    """One peer's reply to a request (a named tuple: made once per reply, cheaply)."""

    address: Address
    reply: ConfdReply


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The verdict on one request.

    ``best`` is the reply trusted (an OK reply beats an error; then the highest
    serial wins; ties go to the earliest), and ``answer``, ``serial`` and
    ``status`` are its fields, or None when nothing arrived. ``consistent`` is
    False when two replies share a serial but differ in answer. ``timed_out``
    means the deadline passed before ``needed`` of the ``sent`` peers replied.

    When the quorum was not reached, the client also fills in what it saw:
    ``send_errors`` (each peer it could not send to, with the OS error),
    ``discards`` (datagrams it discarded while the query waited, by
    :class:`~trioconfd.ClientStats` counter), ``silent`` (the peers asked
    that sent nothing back), ``unreachable`` (those of them the network said
    it could not reach, with how: "port unreachable" where nothing listens),
    ``round_trip`` (the shortest round trip it had measured to them, if
    any), ``key_ends_with_newline`` and ``timeout``; :attr:`diagnosis` turns
    them into likely causes. ``saturated`` means the request was never
    sent: the peers' windows stayed full until the deadline (``sent`` is 0).
    """

    best: ConfdReply | None
    replies: tuple[PeerReply, ...]
    sent: int
    needed: int
    timed_out: bool
    consistent: bool
    send_errors: tuple[tuple[Address, str], ...] = ()
    discards: tuple[tuple[str, int], ...] = ()
    timeout: float | None = None
    saturated: bool = False
    silent: tuple[Address, ...] = ()
    unreachable: tuple[tuple[Address, str], ...] = ()
    round_trip: float | None = None
    key_ends_with_newline: bool = True

    def __repr__(self) -> str:
        best = self.best
        outcome = "no reply" if best is None else f"{best.status.name} serial={best.serial}"
        return (
            f"<QueryResult {outcome} replies={self.received}/{self.sent} needed={self.needed}"
            f"{' timed_out' if self.timed_out else ''}"
            f"{' saturated' if self.saturated else ''}"
            f"{'' if self.consistent else ' INCONSISTENT'}>"
        )

    @property
    def answer(self) -> Any:
        return None if self.best is None else self.best.answer

    @property
    def serial(self) -> int | None:
        return None if self.best is None else self.best.serial

    @property
    def status(self) -> ReplyStatus | None:
        return None if self.best is None else self.best.status

    @property
    def error(self) -> str | None:
        """What the trusted reply says if it is an error (see :attr:`ConfdReply.error`)."""
        return None if self.best is None else self.best.error

    @property
    def not_found(self) -> bool:
        """Whether the trusted reply says what was asked about is unknown (see
        :attr:`ConfdReply.not_found`)."""
        return self.best is not None and self.best.not_found

    @property
    def received(self) -> int:
        return len(self.replies)

    @property
    def quorum_reached(self) -> bool:
        return self.received >= self.needed

    @property
    def ok(self) -> bool:
        """Quorum was reached and the trusted reply has status OK."""
        # (The quorum and the status read directly: most callers ask this once a query.)
        best = self.best
        return (
            len(self.replies) >= self.needed and best is not None and best.status is ReplyStatus.OK
        )

    @property
    def verdict(self) -> str:
        """How the query ended, in a sentence; without a quorum, with its likely causes."""
        counts = f"{self.received} of {self.sent} peers replied, {self.needed} needed"
        if self.quorum_reached:
            return f"quorum reached: {counts}"
        headline = f"{'timed out' if self.timed_out else 'no quorum'}: {counts}"
        return "; ".join((headline, *self.diagnosis))

    @property
    def diagnosis(self) -> tuple[str, ...]:
        """Why the quorum was not reached, as far as the client could see; () if it was."""
        if self.quorum_reached:
            return ()
        causes: list[str] = []
        if self.saturated:
            causes.append(
                "not sent: the client was saturated (every place in a peer's window "
                "stayed taken until the deadline): ask fewer at once, or give a longer timeout"
            )
        timeout_causes = self._timeout_causes()
        causes.extend(timeout_causes)
        if self.sent == 0 and not self.saturated and not timeout_causes:
            causes.append("not sent: its deadline came before the request could be sent")
        for how, peers in _by_text(self.unreachable).items():
            if how == "port unreachable":
                causes.append(f"nothing listens on {peers} (port unreachable)")
            else:
                causes.append(f"the network cannot reach {peers} ({how})")
        causes.extend(
            f"could not send to {peers}: {error}"
            for error, peers in _by_text(self.send_errors).items()
        )
        discards = dict(self.discards)
        if self.unreachable:
            discards.pop("socket_errors", None)  # said above, peer by peer
        causes.extend(
            f"{discards[reason]} {text}" for reason, text in _DISCARD_CAUSES if discards.get(reason)
        )
        causes.extend(self._silence_causes(bool(causes)))
        return tuple(causes)

    def _timeout_causes(self) -> list[str]:
        timeout = self.timeout
        if timeout == 0:
            return ["a zero timeout can't wait for any reply: give one above 0"]
        if timeout is not None and self.round_trip is not None and timeout < self.round_trip:
            return [
                f"the timeout, {timeout:g} s, is shorter than the peers' round trip as "
                f"measured, {self.round_trip * 1000:.3g} ms: give a longer one"
            ]
        if timeout is not None and timeout < QUICKEST_REPLY:
            return [
                f"the timeout, {timeout:g} s, is shorter than a reply takes (a round trip to "
                "a daemon takes 0.1 ms or more, even on loopback): give a longer one"
            ]
        return []

    def _silence_causes(self, explained: bool) -> list[str]:
        """The peers that sent nothing back, with the usual causes of silence
        unless another cause was found."""
        named = {peer for peer, _ in (*self.unreachable, *self.send_errors)}
        silent = [format_address(peer) for peer in self.silent if peer not in named]
        count = len(silent) if self.silent else self.sent - self.received - len(self.send_errors)
        if not self.timed_out or count <= 0:
            return []
        if explained:
            return [f"no reply accepted from {', '.join(silent)}"] if silent else []
        if count == self.sent:
            who = "the peer asked" if count == 1 else f"none of the {count} peers asked"
            who += " sent anything back" if count > 1 else " sent nothing back"
        else:
            who = f"{count} peer{'s' if count > 1 else ''} sent nothing back"
        if silent:
            who += f" ({', '.join(silent)})"
        if self.received:
            # A reply came with our key: the key and the clocks are right.
            timeout = "" if self.timeout is None else f" {self.timeout:g} s"
            return [
                f"{who}; the {self.received} that answered signed with our key, so the key "
                f"and the clocks are right: the others may be down, or slower than the"
                f"{timeout} timeout"
            ]
        key = (
            "a wrong key (ours has no trailing newline, which Ganeti's hmac.key files end with)"
            if not self.key_ends_with_newline
            else "a wrong key (mind the trailing newline)"
        )
        return [
            f"{who}; a daemon answers nothing it cannot authenticate, so: {key}, "
            "a clock over 300 s off, a wrong port, or the daemon is down"
        ]


def _by_text(pairs: tuple[tuple[Address, str], ...]) -> dict[str, str]:
    """Peers grouped by what is said of them: text → "peer, peer"."""
    grouped: dict[str, list[str]] = {}
    for peer, text in pairs:
        grouped.setdefault(text, []).append(format_address(peer))
    return {text: ", ".join(peers) for text, peers in grouped.items()}


#: Seconds: no confd reply comes back sooner, even on loopback (a daemon
#: verifies the request's HMAC and signs its reply; benchmarks.quickest_reply
#: measured 0.13 ms at the quickest, from a bare socket). A timeout shorter
#: than this is named as the cause of a query's silence.
QUICKEST_REPLY = 0.0001

# Discards that point at a cause, in the order a reader should look at them.
_DISCARD_CAUSES = (
    (
        "bad_signature",
        "replies had a bad signature: the peers sign with another key than ours",
    ),
    (
        "unexpected_peer",
        "authentic replies came from addresses not asked: a peer may be multihomed, "
        "answering from another address (name that one as the peer)",
    ),
    (
        "socket_errors",
        "errors came back from the network (such as port unreachable): "
        "nothing listens at a peer's port, or a daemon is down",
    ),
    ("malformed", "datagrams were not confd replies: is something else at a peer's port?"),
)


def answers_equal(first: Any, second: Any) -> bool:
    """Whether two answers (decoded JSON) are equal, however deeply nested.

    ``==`` first, at C speed. A signed reply can carry any JSON, nested as
    deep as the decoder allowed where it ran; compared deeper down a task's
    stack, ``==`` can raise ``RecursionError``, and then the two are compared
    again with a list for a stack.
    """
    try:
        return bool(first == second)
    except RecursionError:
        return _equal_without_recursion(first, second)


def _equal_without_recursion(first: Any, second: Any) -> bool:
    pending = [(first, second)]
    while pending:
        left, right = pending.pop()
        if isinstance(left, list) and isinstance(right, list):
            if len(left) != len(right):
                return False
            pending.extend(zip(left, right, strict=True))
        elif isinstance(left, dict) and isinstance(right, dict):
            if left.keys() != right.keys():
                return False
            pending.extend((left[name], right[name]) for name in left)
        elif isinstance(left, list | dict) or isinstance(right, list | dict) or left != right:
            return False
    return True


#: A QueryResult made at a plain dataclass's cost (once a query).
_new_result = quick_constructor(QueryResult)


class ReplyAggregator:
    """Feed it one (peer, reply) at a time; it keeps the verdict up to date.

    Each peer counts once; the quorum is ``quorum(sent)`` replies, or
    ``needed`` if given (the quorum of more peers than were asked).
    """

    __slots__ = ("_by_serial", "_seen", "best", "consistent", "needed", "replies", "sent")

    def __init__(
        self, sent: int, quorum: QuorumRule = needed_replies, needed: int | None = None
    ) -> None:
        self.sent = sent
        self.needed = quorum_of(quorum, sent) if needed is None else needed
        self.replies: list[PeerReply] = []
        self.best: ConfdReply | None = None
        self.consistent = True
        # Made at the second reply: a query in flight often has one at most.
        self._seen: set[Address] | None = None
        self._by_serial: dict[int, Any] | None = None

    def add(self, address: Address, reply: ConfdReply) -> bool:
        """Count ``reply`` from ``address``; False (and ignored) if that peer counted already."""
        return self.add_reply(PeerReply(address, reply))

    def add_reply(self, peer_reply: PeerReply) -> bool:
        """:meth:`add` for a :class:`PeerReply` already made."""
        address, reply = peer_reply
        replies = self.replies
        if replies:
            seen, by_serial = self._seen, self._by_serial
            if seen is None or by_serial is None:
                # The second reply: who has answered, and the answer at each
                # serial, are kept from now on (most queries to one peer
                # never need them).
                first_address, first = replies[0]
                if address == first_address:
                    return False
                seen, by_serial = self._seen, self._by_serial = (
                    {first_address},
                    {first.serial: first.answer},
                )
            elif address in seen:
                return False
            seen.add(address)
            answer_at_serial = by_serial.setdefault(reply.serial, reply.answer)
            if answer_at_serial is not reply.answer and not answers_equal(
                answer_at_serial, reply.answer
            ):
                self.consistent = False
        replies.append(peer_reply)
        best = self.best
        # (ok, serial) above the best's: the status read, not its ``ok`` property.
        if best is None or (reply.status is _OK, reply.serial) > (best.status is _OK, best.serial):
            self.best = reply
        return True

    def ask_more(self, count: int = 1) -> None:
        """``count`` more peers were asked (hedging); the quorum stays that of the first ones."""
        self.sent += count

    @property
    def received(self) -> int:
        return len(self.replies)

    @property
    def quorum_reached(self) -> bool:
        return len(self.replies) >= self.needed

    @property
    def complete(self) -> bool:
        """Every peer contacted has replied."""
        return len(self.replies) >= self.sent

    def result(self, timed_out: bool = False) -> QueryResult:
        """The verdict so far."""
        # (best, replies, sent, needed, timed_out, consistent): by position,
        # as each query makes one.
        return _new_result(
            self.best, tuple(self.replies), self.sent, self.needed, timed_out, self.consistent
        )
