"""Reading a request as the daemon reads it (sans-IO): the server's side of the wire.

ganeti-confd is stricter about some spellings than JSON and looser about
others: exactly three envelope members, a timestamp read as Haskell reads
an integer, the first of repeated keys, no white space before the message.
The in-process server and the differential fuzzer use this reader.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ._constants import MAGIC, MAX_CLOCK_SKEW, MAX_REQUEST_SIZE
from ._decode import decode_request
from ._errors import ConfdMalformedError, ConfdSignatureError
from ._messages import ConfdRequest
from ._wire import HmacKey, KeyLike, as_hmac_key, envelope_members, signed_bytes

_MAGIC_LEN = len(MAGIC)

_REQUEST_ENVELOPE = frozenset({"msg", "salt", "hmac"})
_JSON_SPACE = " \t\n\r"


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for name, value in pairs:
        members.setdefault(name, value)
    return members


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The daemon's JSON reader: a repeated key keeps its first value; NaN and
# Infinity are not JSON (1e400 is a number, which it reads as infinite).
_request_decoder = json.JSONDecoder(object_pairs_hook=_first_wins, parse_constant=_no_constant)

_HASKELL_INTEGER = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|[0-9]+")


def read_haskell_integer(text: str) -> int | None:
    """``text`` as Haskell's ``reads`` finds one whole Integer in it, else None.

    Leading white space, any parentheses around the number (white space
    inside them), and ``0x``/``0o`` forms are allowed; nothing may follow.
    """
    rest = text.lstrip()
    depth = 0
    while rest.startswith("("):
        rest = rest[1:].lstrip()
        depth += 1
    number = _HASKELL_INTEGER.match(rest)
    if number is None:
        return None
    digits = number.group()
    base = {"x": 16, "o": 8}.get(digits[1:2].lower(), 10)
    value = int(digits[2:] if base != 10 else digits, base)
    rest = rest[number.end() :]
    for _ in range(depth):
        rest = rest.lstrip()
        if not rest.startswith(")"):
            return None
        rest = rest[1:]
    return None if rest else value


def _open_request(datagram: bytes, key: HmacKey) -> tuple[Any, str]:
    """The request's decoded message and salt, read as the daemon reads them."""
    if not datagram.startswith(MAGIC):
        raise ConfdMalformedError(
            f"wrong magic {bytes(datagram[:_MAGIC_LEN])!r}, expected {MAGIC!r}"
        )
    # The daemon reads each byte as a character (Latin-1): a raw "é" sent as
    # UTF-8 is two characters to it, and one byte 0xE9 is "é". It checks the
    # signature over that text written as UTF-8, as the client signs.
    text = datagram[_MAGIC_LEN:].decode("latin-1")
    if text[:1] in _JSON_SPACE:  # also "": nothing after the magic
        raise ConfdMalformedError("the envelope does not follow the magic at once")
    envelope = envelope_members(text, first_wins=True)
    if envelope.keys() != _REQUEST_ENVELOPE:
        raise ConfdSignatureError(
            f"the envelope has members {sorted(envelope)}; the daemon reads msg, salt and hmac only"
        )
    msg, salt = envelope["msg"], envelope["salt"]
    if not key.verify(signed_bytes(salt + msg), envelope["hmac"].lower()):
        raise ConfdSignatureError("HMAC mismatch")
    if msg[:1] in _JSON_SPACE:
        raise ConfdMalformedError("the message starts with white space, which the daemon refuses")
    try:
        return _request_decoder.decode(msg), salt
    except (ValueError, RecursionError) as exc:
        raise ConfdMalformedError(f"the message is not valid JSON: {exc}") from None


def unpack_request(
    datagram: bytes, key: KeyLike, now: float | None = None
) -> tuple[ConfdRequest, str]:
    """Check and decode a request datagram as the daemon does; return it and its salt.

    The daemon reads the first :data:`MAX_REQUEST_SIZE` bytes of a request and
    ignores the rest; its envelope must be exactly msg, salt and hmac (the
    signature's hex in either case); the salt is the sender's Unix time as
    Haskell reads an integer, and more than :data:`MAX_CLOCK_SKEW` whole
    seconds from ``now`` (default: the clock) is stale; its bytes are read
    one a character (Latin-1) and signed as UTF-8; the message must decode
    as the daemon decodes it (only the four request keys; numbers rounded
    and wrapped at 64 bits, however long; strings also as lists of
    one-character strings). Whatever the daemon would drop raises
    :class:`ConfdMalformedError` or :class:`ConfdSignatureError`, and nothing
    else does.
    """
    message, salt = _open_request(datagram[:MAX_REQUEST_SIZE], as_hmac_key(key))
    timestamp = read_haskell_integer(salt)
    if timestamp is None:
        raise ConfdSignatureError(f"the timestamp {salt[:32]!r} is not an integer")
    # Whole seconds on both sides, as the daemon compares them.
    skew = abs(int(time.time() if now is None else now) - timestamp)
    if skew > MAX_CLOCK_SKEW:
        raise ConfdSignatureError(f"the timestamp is {skew} s off, over {MAX_CLOCK_SKEW} s")
    return decode_request(message), salt
