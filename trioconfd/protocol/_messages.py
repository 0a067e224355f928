"""The two messages of the protocol: a request and its reply."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from ._constants import PROTOCOL_VERSION, ErrorCode, ReplyStatus, RequestType
from ._errors import ConfdArgumentError, ConfdArgumentTypeError
from ._frozen import quick_constructor

#: What a request's ``query`` may be on the wire: null, a string, or a dict
#: keyed by :class:`QueryKey` values.
Query: TypeAlias = str | Mapping[str, Any] | None


_ERROR_CODES = {int(code): code for code in ErrorCode}


#: Random hex digits, 32 (128 bits) to an rsalt, drawn 64 rsalts at a time:
#: one ``getrandom`` call each time, not one a request. ``popleft`` and
#: ``extend`` are atomic, so threads never share an rsalt; a forked child
#: forgets what its parent drew (else both would send the same rsalts).
_RANDOM_DIGITS: deque[str] = deque()
_DRAWN_AT_ONCE = 64
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_RANDOM_DIGITS.clear)
#: The UUID variant digit (10xx in binary) of each hex digit's low two bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _draw_random_digits() -> str:
    digits = os.urandom(16 * _DRAWN_AT_ONCE).hex()
    _RANDOM_DIGITS.extend(digits[start : start + 32] for start in range(32, len(digits), 32))
    return digits[:32]


def new_rsalt() -> str:
    """A fresh, unique reply salt: a random UUID4 string, as Ganeti makes them."""
    # Formatted from 128 random bits directly: the uuid module's object costs
    # more than the rest of making a request.
    try:
        digits = _RANDOM_DIGITS.popleft()
    except IndexError:
        digits = _draw_random_digits()
    variant = _VARIANT[digits[16]]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


def _check_query(query: object) -> None:
    if query is not None and not isinstance(query, str | Mapping):
        raise ConfdArgumentTypeError(
            f"query must be None, a string or a dict, not {type(query).__name__}"
        )


def _as_request_type(value: object) -> RequestType:
    if isinstance(value, RequestType):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return RequestType(value)
        except ValueError:
            pass
    raise ConfdArgumentError(f"unknown request type {value!r}")


@dataclass(frozen=True, slots=True)
class ConfdRequest:
    """A confd request; a fresh ``rsalt`` is filled in unless one is given.

    ``query`` is the wire value: None, a string, or a dict keyed by
    :class:`QueryKey` values, e.g. ``{"3": [0, 1, 2]}`` for master fields.
    An unknown ``type`` raises :class:`ConfdClientError`.

    The rsalt is the only link between a reply and its request, so a request
    is sent once: a reply to it, captured or late, must never answer another
    send. A client's queries send a request that was sent before as
    :meth:`renewed`; ``send_request`` refuses it. An rsalt you give yourself
    must be as unique as a fresh one.
    """

    type: RequestType
    query: Query = None
    rsalt: str = field(default_factory=new_rsalt)
    protocol: int = PROTOCOL_VERSION
    # Set by a client when it sends the request; not part of its value.
    _sent: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _as_request_type(self.type))
        if not isinstance(self.rsalt, str):
            raise ConfdArgumentTypeError(f"rsalt must be a string, not {self.rsalt!r}")
        _check_query(self.query)

    @property
    def sent(self) -> bool:
        """Whether a client has sent this request (then send :meth:`renewed` instead)."""
        return self._sent

    def renewed(self) -> ConfdRequest:
        """The same question under a fresh rsalt, not yet sent."""
        return replace(self, rsalt=new_rsalt())

    def mark_sent(self) -> None:
        """Record that a client sends this request (clients call it; its rsalt is spent)."""
        object.__setattr__(self, "_sent", True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object this request is sent as."""
        return {
            "protocol": self.protocol,
            "type": int(self.type),
            "query": self.query,
            "rsalt": self.rsalt,
        }


# Its checks are new_request's own.
_quick_request = quick_constructor(ConfdRequest, checked_by_caller=True)


def new_request(type: RequestType | int, query: Query = None) -> ConfdRequest:
    """``ConfdRequest(type, query)`` (a fresh rsalt), at a plain dataclass's cost:
    a query made from a type makes one."""
    request_type = _as_request_type(type)
    _check_query(query)
    return _quick_request(request_type, query)


@dataclass(frozen=True, slots=True)
class ConfdReply:
    """A confd reply: ``answer`` was computed from configuration ``serial``."""

    status: ReplyStatus
    answer: Any
    serial: int
    protocol: int = PROTOCOL_VERSION

    @property
    def ok(self) -> bool:
        """Whether the daemon answered with status OK."""
        return self.status is ReplyStatus.OK

    @property
    def error_code(self) -> ErrorCode | None:
        """The standard error an ERROR reply's answer names, else None."""
        answer = self.answer
        if (
            self.status is ReplyStatus.ERROR
            and isinstance(answer, int)
            and not isinstance(answer, bool)
            and answer in _ERROR_CODES
        ):
            return _ERROR_CODES[answer]
        return None

    @property
    def not_found(self) -> bool:
        """Whether this error reply says the name or address asked about is unknown.

        The daemon says so with the ``UNKNOWN_ENTRY`` code (an instance IP)
        or with Ganeti's ``ECodeNoEnt`` in its text (a node or an instance
        name). A path a ``CONFIG_QUERY`` does not find is an ``ARGUMENT``
        error, which a reply alone cannot tell from a query of the wrong kind.
        """
        if self.status is not ReplyStatus.ERROR:
            return False
        answer = self.answer
        if isinstance(answer, str):
            return "ECodeNoEnt" in answer
        return self.error_code is ErrorCode.UNKNOWN_ENTRY

    @property
    def error(self) -> str | None:
        """What an error reply says, in words; None for an OK reply.

        A standard code reads ``"ARGUMENT: the query was not understood …"``;
        an error the daemon gives as text is that text.
        """
        if self.status is ReplyStatus.OK:
            return None
        code = self.error_code
        if code is not None:
            return code.describe()
        if self.status is ReplyStatus.NOTIMPLEMENTED:
            return "NOTIMPLEMENTED: the daemon does not implement this request"
        answer = self.answer
        if isinstance(answer, str):
            return answer
        try:
            return f"error {json.dumps(answer)}"
        except RecursionError:  # a signed reply may nest past the stack's reach
            return "error (an answer nested too deeply to show)"

    def to_wire(self) -> dict[str, Any]:
        """The JSON object this reply is sent as, in the daemon's field order."""
        return {
            "protocol": self.protocol,
            "status": int(self.status),
            "answer": self.answer,
            "serial": self.serial,
        }
