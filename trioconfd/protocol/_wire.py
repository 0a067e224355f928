"""Packing and unpacking confd datagrams (sans-IO).

A datagram is ``b"plj0"`` followed by a JSON envelope
``{"hmac": ..., "msg": ..., "salt": ...}`` whose ``msg`` is itself a JSON
document carried as a string, signed with HMAC-SHA1 over ``salt + msg``.
Every function here is pure: no sockets, no clocks unless asked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Container, Mapping
from typing import Any, NoReturn, TypeAlias

from ._constants import MAGIC, MAX_DATAGRAM_SIZE, MAX_REQUEST_SIZE, ReplyStatus
from ._errors import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdMalformedError,
    ConfdSignatureError,
    ConfdUnknownSaltError,
)
from ._frozen import quick_constructor
from ._messages import ConfdReply, ConfdRequest

_MAGIC_LEN = len(MAGIC)

# Set up once: compact separators match what the daemon sends.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _mapping_as_dict(value: object) -> dict[Any, Any]:
    """A query may hold any mapping (ConfdRequest takes one): written as a dict."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# A query's: NaN and the infinities are not JSON (the daemon drops such a request).
_encode_query = json.JSONEncoder(
    separators=(",", ":"), allow_nan=False, default=_mapping_as_dict
).encode
_decoder = json.JSONDecoder()
_decode_json = _decoder.decode
_scan_json: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]
# The C quoter behind the encoder: a str as an ASCII JSON string literal.
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii
# The C string scanner behind the decoder: (text, index after the opening quote).
_scan_string: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_json_space = re.compile(r"[ \t\n\r]*")
_JSON_SPACE = frozenset(" \t\n\r")

#: The envelope's members: msg, salt, hmac, and key_selector if a sender adds it.
_MAX_ENVELOPE_MEMBERS = 4

# The envelope as ganeti-confd (and _pack) writes it: compact, its members
# in this order. Read in that layout, each string is scanned where the token
# reader would scan it, with a few calls instead of a dozen a member (about
# 1 µs for a short reply's envelope, against 7); where a text departs from
# it, the token reader goes on from there, with what was read so far.
_CANONICAL_HEAD = '{"hmac":"'
_CANONICAL_MSG = ',"msg":"'
_CANONICAL_SALT = ',"salt":"'
_HEAD_SIZE, _MSG_SIZE, _SALT_SIZE = map(len, (_CANONICAL_HEAD, _CANONICAL_MSG, _CANONICAL_SALT))


#: SHA-1's block: a key is padded to it (hashed first if longer), RFC 2104.
_SHA1_BLOCK = 64
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


def _keyed_sha1(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA1 keyed with ``key`` (RFC 2104), as two SHA-1 states to be copied
    for each message: the inner one has hashed the key's inner pad, the
    outer one its outer pad. Copying two plain hashes costs a third of
    copying OpenSSL's HMAC object (this runs twice per query).
    """
    if len(key) > _SHA1_BLOCK:
        key = hashlib.sha1(key).digest()
    key = key.ljust(_SHA1_BLOCK, b"\0")
    return hashlib.sha1(key.translate(_INNER_PAD)), hashlib.sha1(key.translate(_OUTER_PAD))


class HmacKey:
    """The cluster's HMAC key, keyed once so each datagram only hashes its data.

    The key is the exact bytes of ``hmac.key`` (a trailing newline is part of
    it); a str is UTF-8 encoded. It never appears in a repr or an error.
    """

    __slots__ = ("_keyed", "ends_with_newline")

    def __init__(self, key: bytes | str) -> None:
        if isinstance(key, str):
            try:
                key = key.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfdArgumentError(
                    "the HMAC key is a str that is not valid Unicode"
                ) from None
        elif isinstance(key, bytearray | memoryview):
            key = bytes(key)
        elif not isinstance(key, bytes):
            raise ConfdArgumentTypeError(
                f"the HMAC key must be bytes or str, not {type(key).__name__}"
            )
        if not key:
            raise ConfdArgumentError("the HMAC key is empty")
        self._keyed = _keyed_sha1(key)
        #: Ganeti's hmac.key files end with a newline, which is part of the key.
        self.ends_with_newline = key.endswith(b"\n")

    def sign(self, data: bytes) -> str:
        """The lowercase hex HMAC-SHA1 of ``data``."""
        inner_keyed, outer_keyed = self._keyed
        inner = inner_keyed.copy()
        inner.update(data)
        outer = outer_keyed.copy()
        outer.update(inner.digest())
        digest: str = outer.hexdigest()
        return digest

    def verify(self, data: bytes, signature: str) -> bool:
        """Whether ``signature`` signs ``data``, compared in constant time."""
        # compare_digest refuses non-ASCII str; such a signature is wrong anyway.
        return signature.isascii() and hmac.compare_digest(self.sign(data), signature)

    def __repr__(self) -> str:
        return "<HmacKey (hidden)>"


KeyLike: TypeAlias = HmacKey | bytes | str


def as_hmac_key(key: KeyLike) -> HmacKey:
    """``key`` as an :class:`HmacKey` (keyed once)."""
    return key if isinstance(key, HmacKey) else HmacKey(key)


def signed_bytes(text: str) -> bytes:
    """The bytes a signature covers: UTF-8, lone surrogates in their 3-byte form.

    A lone surrogate comes from a JSON escape such as ``\\udfff`` in a
    datagram; ganeti-confd signs it that way, and answers it.
    """
    return text.encode("utf-8", "surrogatepass")


def _pack(text: str, salt: str, key: HmacKey) -> bytes:
    """Sign the message ``text`` and wrap it in the envelope, as compact JSON."""
    signature = key.sign(signed_bytes(salt + text))
    # The envelope written by hand with the C string quoter: the same bytes
    # as encoding the dict, at a fraction of the cost (this is per datagram).
    envelope = f'{{"hmac":"{signature}","msg":{_quote(text)},"salt":{_quote(salt)}}}'
    datagram = MAGIC + envelope.encode("ascii")
    if len(datagram) > MAX_DATAGRAM_SIZE:
        raise ConfdArgumentError(
            f"the message is {len(datagram)} bytes, "
            f"over the {MAX_DATAGRAM_SIZE}-byte datagram limit"
        )
    return datagram


def _query_json(query: object) -> str:
    """A dict query as JSON, or an error naming what JSON cannot hold."""
    try:
        return _encode_query(query)
    except TypeError as exc:  # a set, bytes, an object...
        raise ConfdArgumentTypeError(f"the query is not JSON: {exc}") from None
    except RecursionError:
        raise ConfdArgumentError("the query is nested too deeply to encode") from None
    except ValueError as exc:  # NaN or an infinity; a circular reference
        if "float" in str(exc):
            raise ConfdArgumentError("the query holds NaN or an infinity: JSON has none") from None
        raise ConfdArgumentError(f"the query is not JSON: {exc}") from None


def pack_request(request: ConfdRequest, key: KeyLike, now: float | None = None) -> bytes:
    """The datagram that sends ``request``, timestamped ``now`` (default: the clock).

    A request over :data:`MAX_REQUEST_SIZE` bytes is refused: the daemon reads
    no more than that, so it would never answer.
    """
    salt = str(int(time.time() if now is None else now))  # whole seconds, like "%d"
    query = request.query
    if query is None:
        query_text = "null"
    elif isinstance(query, str):
        query_text = _quote(query)
    else:
        query_text = _query_json(query)
    text = (
        f'{{"protocol":{int(request.protocol)},"type":{int(request.type)},'
        f'"query":{query_text},"rsalt":{_quote(request.rsalt)}}}'
    )
    datagram = _pack(text, salt, as_hmac_key(key))
    if len(datagram) > MAX_REQUEST_SIZE:
        raise ConfdArgumentError(
            f"the request is {len(datagram)} bytes; the daemon reads at most {MAX_REQUEST_SIZE}"
        )
    return datagram


def pack_reply(reply: ConfdReply, rsalt: str, key: KeyLike) -> bytes:
    """The datagram that answers the request whose rsalt is ``rsalt``."""
    return _pack(_encode_json(reply.to_wire()), rsalt, as_hmac_key(key))


def _load(text: str | bytes, what: str) -> Any:
    try:
        if not isinstance(text, str):
            text = text.decode("utf-8")
        # The C scanner alone, for the usual exact document; anything else
        # (surrounding whitespace, trailing data, errors) goes through the
        # full decoder, which accepts or names the fault precisely.
        try:
            value, end = _scan_json(text, 0)
        except StopIteration:
            end = -1
        if end == len(text):
            return value
        return _decode_json(text)
    except UnicodeDecodeError:
        raise ConfdMalformedError(f"{what} is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ConfdMalformedError(f"{what} is not valid JSON: {exc}") from None


def _skip_space(text: str, position: int) -> int:
    """The position after JSON whitespace at ``position`` (skipped in C)."""
    if text[position : position + 1] not in _JSON_SPACE:
        return position  # none, as most often: no pattern to run
    match = _json_space.match(text, position)
    assert match is not None  # "*" matches the empty string too
    return match.end()


def _envelope_error(text: str, position: int, expected: str) -> ConfdMalformedError:
    return ConfdMalformedError(
        f"the envelope is not a JSON object of strings: expected {expected} "
        f"(at character {min(position, len(text))})"
    )


def _token(text: str, position: int, token: str, expected: str) -> int:
    """The position after ``token`` at ``position`` and the whitespace after it."""
    if not text.startswith(token, position):
        raise _envelope_error(text, position, expected)
    return _skip_space(text, position + 1)


def _string(text: str, position: int, strict: bool, value_of: str | None = None) -> tuple[str, int]:
    """The JSON string at ``position`` (a member name, or the value of member
    ``value_of``), and the position after it and its whitespace."""
    if not text.startswith('"', position):
        expected = (
            "a member name" if value_of is None else f"a string as the value of {value_of[:20]!r}"
        )
        raise _envelope_error(text, position, expected)
    try:
        value, position = _scan_string(text, position + 1, strict)
    except ValueError as exc:  # JSONDecodeError: a bad escape, a control character, no end
        raise ConfdMalformedError(f"the envelope is not a JSON object of strings: {exc}") from None
    return value, _skip_space(text, position)


def envelope_members(text: str, strict: bool = True, *, first_wins: bool = False) -> dict[str, str]:
    """The envelope's members, read without a general JSON parser.

    An envelope is a flat JSON object of at most four string members, so
    this reads exactly that and refuses anything else where it starts:
    nesting, numbers, long member lists. Each string is scanned by the JSON
    module's C scanner, so what is accepted decodes as ``json.loads`` would,
    and rejecting garbage never costs more than reading a valid envelope of
    the same size token by token (one in ganeti-confd's own layout is read
    faster still, see :data:`_CANONICAL_HEAD`; garbage that begins in that
    layout is read so only as far as it keeps to it, then token by token
    from there, nothing read twice). A general parse would first build
    whatever the garbage describes (tens of thousands of numbers, or nesting
    down to the recursion limit) at up to a thousand times the cost.
    """
    members = _envelope(text, strict, first_wins)
    if isinstance(members, tuple):
        signature, msg, salt = members
        return {"hmac": signature, "msg": msg, "salt": salt}
    return members


def _envelope(text: str, strict: bool, first_wins: bool) -> tuple[str, str, str] | dict[str, str]:
    """:func:`envelope_members`; one in ganeti-confd's own layout (the usual reply)
    as its ``(hmac, msg, salt)``, with no dict made and none read back."""
    if not text.startswith(_CANONICAL_HEAD):
        return _read_members(text, strict=strict, first_wins=first_wins)
    # In ganeti-confd's own layout, as far as it goes. A string the scanner
    # refuses is refused here as the token reader would refuse it, in its words.
    end = _HEAD_SIZE
    try:
        signature, end = _scan_string(text, end, strict)
        if not text.startswith(_CANONICAL_MSG, end):
            read = {"hmac": signature}
        else:
            msg, end = _scan_string(text, end + _MSG_SIZE, strict)
            if not text.startswith(_CANONICAL_SALT, end):
                read = {"hmac": signature, "msg": msg}
            else:
                salt, end = _scan_string(text, end + _SALT_SIZE, strict)
                if end == len(text) - 1 and text.endswith("}"):
                    return signature, msg, salt
                read = {"hmac": signature, "msg": msg, "salt": salt}
    except ValueError as exc:  # JSONDecodeError: a bad escape, a control character, no end
        raise ConfdMalformedError(f"the envelope is not a JSON object of strings: {exc}") from None
    return _read_members(
        text, strict=strict, first_wins=first_wins, read=read, position=_skip_space(text, end)
    )


def _read_members(
    text: str,
    *,
    strict: bool,
    first_wins: bool,
    read: dict[str, str] | None = None,
    position: int = 0,
) -> dict[str, str]:
    """:func:`envelope_members`, read token by token (naming the first fault); from
    the start, or on from ``position``, just after the members ``read`` already
    (their names all different) and the whitespace after the last one."""
    if read is None:
        members: dict[str, str] = {}
        position = _token(text, _skip_space(text, 0), "{", "{")
        closed = text.startswith("}", position)
    else:
        members = read
        closed = text.startswith("}", position)
        if not closed:
            position = _token(text, position, ",", "',' or '}'")
    count = len(members)
    while not closed:
        count += 1
        if count > _MAX_ENVELOPE_MEMBERS:
            raise _envelope_error(text, position, "the end of the envelope")
        name, position = _string(text, position, strict)
        position = _token(text, position, ":", "':'")
        value, position = _string(text, position, strict, name)
        if not (first_wins and name in members):
            members[name] = value
        closed = text.startswith("}", position)
        if not closed:
            position = _token(text, position, ",", "',' or '}'")
    if _skip_space(text, position + 1) != len(text):
        raise _envelope_error(text, position + 1, "nothing after the envelope")
    return members


def _authenticate(
    text: str, key: HmacKey, strict: bool, awaited: Container[str] | None
) -> tuple[str | None, str]:
    """The envelope ``text``'s message and salt, once its signature holds. With
    ``awaited``, a salt not found there comes back with None for the message,
    and nothing more is checked."""
    envelope = _envelope(text, strict, False)
    if isinstance(envelope, tuple):  # in ganeti-confd's own layout
        signature, msg, salt = envelope
        selector = ""
    else:
        found_msg = envelope.get("msg")
        found_salt = envelope.get("salt")
        found_signature = envelope.get("hmac")
        if found_msg is None or found_salt is None or found_signature is None:
            raise ConfdSignatureError("the envelope lacks a string msg, salt or hmac")
        signature, msg, salt = found_signature, found_msg, found_salt
        selector = envelope.get("key_selector", "")
    if awaited is not None and salt not in awaited:
        return None, salt
    signed = signed_bytes(salt + selector + msg)
    if not key.verify(signed, signature.lower()):
        raise ConfdSignatureError("HMAC mismatch")
    return msg, salt


def _int_field(message: dict[str, Any], name: str) -> int:
    value = message.get(name)
    if type(value) is not int:  # exactly int: JSON true is a bool, not a number
        raise ConfdMalformedError(f"field {name!r} is {value!r}, not an integer")
    return value


_STATUSES = {int(s): s for s in ReplyStatus}
#: A ConfdReply made at a plain dataclass's cost (once a reply).
_new_reply = quick_constructor(ConfdReply)


def unpack_reply(
    datagram: bytes, key: KeyLike, awaited: Container[str] | None = None
) -> tuple[ConfdReply, str]:
    """Check and decode a reply datagram; return the reply and its salt (the rsalt).

    A reply is read as UTF-8, or as the 8-bit text ganeti-confd 3.0 writes
    when that is what its signature verifies. With ``awaited`` (the rsalts
    of the requests in flight), a reply to none of them (in either reading)
    is refused once its envelope is read, before its signature is checked
    and its message parsed (:class:`ConfdUnknownSaltError`): a late reply,
    or garbage, costs what reading its envelope does.

    Raises :class:`ConfdMalformedError`, :class:`ConfdSignatureError` or
    :class:`ConfdUnknownSaltError`, nothing else.
    """
    found = read_awaited_reply(datagram, as_hmac_key(key), awaited)
    if isinstance(found, str):
        raise ConfdUnknownSaltError(found)
    return found


def read_awaited_reply(
    datagram: bytes, key: HmacKey, awaited: Container[str] | None
) -> tuple[ConfdReply, str] | str:
    """:func:`unpack_reply`, for the receive task: a reply whose salt ``awaited``
    does not hold comes back as that salt alone (unauthenticated), not raised.

    Many replies a client reads are late: a query ends at its quorum, and
    the slower peers' replies then answer no request (one in three at 3
    peers, two in five at 5). Raised and caught, each cost ~1.4 µs more.
    Raises :class:`ConfdMalformedError` or :class:`ConfdSignatureError`.
    """
    # Size, magic and signature first: only the envelope is read before the
    # signature is checked, and the message is parsed as general JSON once it
    # is known to come from a key holder. (Positional arguments on this
    # path: a keyword one costs ~40 ns a call.)
    if len(datagram) > MAX_DATAGRAM_SIZE:
        raise ConfdMalformedError(
            f"datagram of {len(datagram)} bytes is over the {MAX_DATAGRAM_SIZE}-byte limit"
        )
    if not datagram.startswith(MAGIC):
        raise ConfdMalformedError(
            f"wrong magic {bytes(datagram[:_MAGIC_LEN])!r}, expected {MAGIC!r}"
        )
    body = datagram[_MAGIC_LEN:]
    # A datagram that does not authenticate as UTF-8 is read again as
    # ganeti-confd 3.0 writes its replies: it signs the UTF-8 of its text but
    # writes each character as one byte, its low 8 bits. Read byte for
    # character, a text whose characters are all below U+0100 is the one it
    # signed, even where those bytes happen to be valid UTF-8 too. A character
    # above U+00FF was lost in the writing, and nothing can verify it: its
    # low byte may even be a control character, hence not strict.
    try:
        msg, salt = _authenticate(body.decode("utf-8"), key, True, awaited)
    except UnicodeDecodeError:
        msg, salt = _authenticate(body.decode("latin-1"), key, False, awaited)
    except ConfdSignatureError:
        if body.isascii():
            raise
        msg, salt = _authenticate(body.decode("latin-1"), key, False, awaited)
    else:
        # (A salt not awaited as UTF-8 may be one as 8-bit text: "Ã©" is "é".)
        if msg is None and not body.isascii():
            msg, salt = _authenticate(body.decode("latin-1"), key, False, awaited)
    if msg is None:
        return salt  # no request awaits it (in either reading)
    message = _load(msg, "the message")
    if not isinstance(message, dict):
        raise ConfdMalformedError("the reply is not a JSON object")
    status = message.get("status")
    serial = message.get("serial")
    protocol = message.get("protocol")
    # Exactly int: JSON true is a bool, not a number.
    if (
        type(status) is not int
        or type(serial) is not int
        or type(protocol) is not int
        or status not in _STATUSES
        or "answer" not in message
    ):
        _refuse_reply_fields(message)
    reply = _new_reply(_STATUSES[status], message["answer"], serial, protocol)
    return reply, salt


def _refuse_reply_fields(message: dict[str, Any]) -> NoReturn:
    """Raise what is wrong with a reply's fields, the first fault first."""
    status = _int_field(message, "status")
    if status not in _STATUSES:
        raise ConfdMalformedError(f"unknown reply status {status}")
    if "answer" not in message:
        raise ConfdMalformedError("the reply has no answer field")
    _int_field(message, "serial")
    _int_field(message, "protocol")
    raise AssertionError("unreachable: a field is wrong")  # pragma: no cover
