"""The sans-IO wire format: packing, unpacking, signatures, malformed input."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import threading
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trioconfd import (
    MAGIC,
    MAX_DATAGRAM_SIZE,
    MAX_REQUEST_SIZE,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientError,
    ConfdMalformedError,
    ConfdProtocolError,
    ConfdReply,
    ConfdRequest,
    ConfdSignatureError,
    ConfdUnknownSaltError,
    HmacKey,
    ReplyStatus,
    RequestType,
    new_rsalt,
    pack_request,
    unpack_reply,
)
from trioconfd.protocol import pack_reply, unpack_request
from trioconfd.testing import strategies

from .garbage import COSTLY_GARBAGE

KEY = b"secretkey"

# Replies captured from Debian's ganeti-confd 3.0.2 with the key b"secretkey".
REAL_REPLIES = [
    (
        b'plj0{"hmac":"dcb10130e4d21ce6fea25834c6b038eb1ce33935","msg":"{\\"protocol\\":1,'
        b'\\"status\\":0,\\"answer\\":3000000,\\"serial\\":0}",'
        b'"salt":"457f3933-fa0b-4d56-83e8-aeb744ee3216"}',
        ConfdReply(ReplyStatus.OK, 3000000, 0),
        "457f3933-fa0b-4d56-83e8-aeb744ee3216",
    ),
    (
        b'plj0{"hmac":"3140433146dfdc0988b132386480edd241a35cb0","msg":"{\\"protocol\\":1,'
        b'\\"status\\":0,\\"answer\\":\\"node1.example.com\\",\\"serial\\":3189}",'
        b'"salt":"370c466b-ecbb-4083-9987-1cef3a5a7512"}',
        ConfdReply(ReplyStatus.OK, "node1.example.com", 3189),
        "370c466b-ecbb-4083-9987-1cef3a5a7512",
    ),
    (
        b'plj0{"hmac":"d1ace01efa8b017ac8af39f37ccec5a19d40cbd7","msg":"{\\"protocol\\":1,'
        b'\\"status\\":1,\\"answer\\":2,\\"serial\\":0}",'
        b'"salt":"ef5fbfd3-01d0-48ff-98b2-0c18801c0429"}',
        ConfdReply(ReplyStatus.ERROR, 2, 0),
        "ef5fbfd3-01d0-48ff-98b2-0c18801c0429",
    ),
]


@pytest.mark.parametrize(("datagram", "reply", "salt"), REAL_REPLIES)
def test_real_daemon_replies_unpack(datagram: bytes, reply: ConfdReply, salt: str) -> None:
    assert unpack_reply(datagram, KEY) == (reply, salt)


@pytest.mark.parametrize(("datagram", "reply", "salt"), REAL_REPLIES)
def test_pack_reply_is_byte_identical_to_the_daemon(
    datagram: bytes, reply: ConfdReply, salt: str
) -> None:
    assert pack_reply(reply, salt, KEY) == datagram


def test_pack_request_layout() -> None:
    request = ConfdRequest(RequestType.CLUSTER_MASTER, {"3": [0, 1, 2]}, rsalt="r1")
    datagram = pack_request(request, KEY, now=1700000000.7)
    assert datagram.startswith(MAGIC)
    envelope = json.loads(datagram[4:])
    assert envelope["salt"] == "1700000000"
    assert json.loads(envelope["msg"]) == {
        "protocol": 1,
        "type": 3,
        "query": {"3": [0, 1, 2]},
        "rsalt": "r1",
    }
    assert envelope["hmac"] == HmacKey(KEY).sign(("1700000000" + envelope["msg"]).encode())


def test_request_gets_fresh_unique_rsalt_and_protocol_1() -> None:
    salts = {ConfdRequest(RequestType.PING).rsalt for _ in range(1000)}
    assert len(salts) == 1000
    assert ConfdRequest(RequestType.PING).protocol == 1


@pytest.mark.parametrize("bad_type", [12, -1, "0", None, True, 3.0])
def test_unknown_request_type_is_refused(bad_type: object) -> None:
    with pytest.raises(ConfdClientError, match="unknown request type"):
        ConfdRequest(bad_type)  # type: ignore[arg-type]


def test_request_type_is_coerced_from_int() -> None:
    assert ConfdRequest(3).type is RequestType.CLUSTER_MASTER  # type: ignore[arg-type]


def test_request_query_must_be_a_wire_value() -> None:
    with pytest.raises(ConfdClientError, match="query must be"):
        ConfdRequest(RequestType.PING, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "error", "match"),
    [
        ({"3": [float("nan")]}, ConfdArgumentError, "NaN or an infinity"),
        ({"3": [float("-inf")]}, ConfdArgumentError, "NaN or an infinity"),
        ({"3": {1, 2}}, ConfdArgumentTypeError, "set is not JSON"),
        ({"3": b"node1"}, ConfdArgumentTypeError, "bytes is not JSON"),
    ],
)
def test_a_query_json_cannot_hold_is_refused_naming_why(
    query: dict[str, object], error: type[Exception], match: str
) -> None:
    # Sent as Python's json writes NaN, the daemon drops the request: the
    # caller would wait out its timeout for a reply that never comes.
    with pytest.raises(error, match=match):
        pack_request(ConfdRequest(RequestType.CLUSTER_MASTER, query), b"k")


def test_a_query_of_any_mapping_is_written_as_a_dict() -> None:
    # ConfdRequest takes any Mapping as a query, at any depth.
    as_dict = ConfdRequest(RequestType.NODE_PIP_BY_INSTANCE_IP, {"1": {"a": [1]}}, rsalt="r")
    proxied = ConfdRequest(
        RequestType.NODE_PIP_BY_INSTANCE_IP,
        MappingProxyType({"1": MappingProxyType({"a": [1]})}),
        rsalt="r",
    )
    assert pack_request(proxied, b"k", now=7) == pack_request(as_dict, b"k", now=7)


def test_a_query_nested_too_deeply_or_in_a_circle_is_refused() -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(5000):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    with pytest.raises(ConfdArgumentError, match="nested too deeply"):
        pack_request(ConfdRequest(RequestType.CLUSTER_MASTER, {"3": deep}), b"k")
    circle: dict[str, object] = {}
    circle["3"] = circle
    with pytest.raises(ConfdArgumentError, match="Circular"):
        pack_request(ConfdRequest(RequestType.CLUSTER_MASTER, circle), b"k")


def test_str_key_is_utf8_bytes() -> None:
    reply = ConfdReply(ReplyStatus.OK, "x", 1)
    assert pack_reply(reply, "s", "clé") == pack_reply(reply, "s", "clé".encode())


@pytest.mark.parametrize("empty", [b"", ""])
def test_empty_key_is_refused(empty: bytes | str) -> None:
    with pytest.raises(ConfdClientError, match="empty"):
        HmacKey(empty)


def test_key_is_never_shown() -> None:
    key = HmacKey(b"topsecret")
    assert "topsecret" not in repr(key)
    assert "topsecret" not in str(key)


def test_key_of_wrong_type_is_refused() -> None:
    with pytest.raises(ConfdClientError, match="bytes or str"):
        HmacKey(1234)  # type: ignore[arg-type]


def _signed(msg: str, salt: str, key: bytes = KEY) -> bytes:
    signature = HmacKey(key).sign((salt + msg).encode())
    return MAGIC + json.dumps({"hmac": signature, "msg": msg, "salt": salt}).encode()


GOOD_MSG = '{"protocol":1,"status":0,"answer":1,"serial":5}'


@pytest.mark.parametrize(
    ("datagram", "error", "message"),
    [
        (b"", ConfdMalformedError, "wrong magic"),
        (b"plj1{}", ConfdMalformedError, "wrong magic"),
        (b"plj0", ConfdMalformedError, "not a JSON object of strings: expected {"),
        (b"plj0{nope", ConfdMalformedError, "expected a member name"),
        (b"plj0\xff\xfe{}", ConfdMalformedError, "expected {"),  # read as 8-bit: "\xff\xfe{}"
        (b"plj0[1, 2]", ConfdMalformedError, "expected {"),
        (b"plj0" + b"[" * 100000, ConfdMalformedError, "over the"),
        (b"plj0" + b"[" * 50000 + b"]" * 50000, ConfdMalformedError, "over the"),
        (b"plj0" + b"[" * 30000 + b"]" * 30000, ConfdMalformedError, "expected {"),
        (b'plj0{"msg": [[[[[[', ConfdMalformedError, "expected a string as the value of 'msg'"),
        (b'plj0{"msg": "x" "salt"}', ConfdMalformedError, "expected ',' or '}'"),
        (b'plj0{"msg" "x"}', ConfdMalformedError, "expected ':'"),
        (b'plj0{"msg": "x}', ConfdMalformedError, "Unterminated string"),
        (b'plj0{"msg": "x"} []', ConfdMalformedError, "nothing after the envelope"),
        (
            b'plj0{"a":"","b":"","c":"","d":"","e":""}',
            ConfdMalformedError,
            "the end of the envelope",
        ),
        (b'plj0{"msg": "x", "salt": "s"}', ConfdSignatureError, "lacks"),
        (b'plj0{"msg": 1, "salt": "s", "hmac": "h"}', ConfdMalformedError, "value of 'msg'"),
        (
            b'plj0{"msg": "x", "salt": "s", "hmac": "h", "key_selector": 3}',
            ConfdMalformedError,
            "value of 'key_selector'",
        ),
        (b'plj0{"msg": "x", "salt": "s", "hmac": "00"}', ConfdSignatureError, "mismatch"),
        (b'plj0{"msg": "x", "salt": "s", "hmac": "\\u00e9"}', ConfdSignatureError, "mismatch"),
        (b'plj0{"msg": "\\ud800", "salt": "s", "hmac": "0"}', ConfdSignatureError, "mismatch"),
        (_signed(GOOD_MSG, "s", b"otherkey"), ConfdSignatureError, "mismatch"),
        (_signed("not json", "s"), ConfdMalformedError, "not valid JSON"),
        (_signed("[]", "s"), ConfdMalformedError, "not a JSON object"),
        (_signed('{"protocol":1,"status":0,"answer":1}', "s"), ConfdMalformedError, "serial"),
        (_signed('{"protocol":1,"status":0,"serial":1}', "s"), ConfdMalformedError, "answer"),
        (
            _signed('{"protocol":1,"status":7,"answer":1,"serial":1}', "s"),
            ConfdMalformedError,
            "status",
        ),
        (
            _signed('{"protocol":1,"status":0,"answer":1,"serial":true}', "s"),
            ConfdMalformedError,
            "serial",
        ),
        (
            _signed('{"protocol":"1","status":0,"answer":1,"serial":1}', "s"),
            ConfdMalformedError,
            "protocol",
        ),
    ],
)
def test_malformed_replies_raise_protocol_errors(
    datagram: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        unpack_reply(datagram, KEY)


def test_oversized_datagram_is_refused_even_if_signed() -> None:
    msg = json.dumps({"protocol": 1, "status": 0, "answer": "x" * MAX_DATAGRAM_SIZE, "serial": 1})
    with pytest.raises(ConfdMalformedError, match="over the 65527-byte limit"):
        unpack_reply(_signed(msg, "s"), KEY)


def test_pack_refuses_a_reply_over_the_datagram_limit() -> None:
    with pytest.raises(ConfdClientError, match="datagram limit"):
        pack_reply(ConfdReply(ReplyStatus.OK, "x" * MAX_DATAGRAM_SIZE, 1), "s", KEY)


def test_key_selector_is_part_of_the_signed_text() -> None:
    signature = HmacKey(KEY).sign(("s" + "cluster" + GOOD_MSG).encode())
    envelope = {"hmac": signature, "msg": GOOD_MSG, "salt": "s", "key_selector": "cluster"}
    reply, salt = unpack_reply(MAGIC + json.dumps(envelope).encode(), KEY)
    assert (reply.answer, reply.serial, salt) == (1, 5, "s")


def test_unpack_request_checks_clock_skew() -> None:
    datagram = pack_request(ConfdRequest(RequestType.PING), KEY, now=1_000_000)
    for now in (1_000_000 - 300, 1_000_000, 1_000_300.9):
        request, salt = unpack_request(datagram, KEY, now=now)
        assert (request.type, salt) == (RequestType.PING, "1000000")
    for now in (1_000_000 - 301, 1_000_301):
        with pytest.raises(ConfdSignatureError, match="timestamp is"):
            unpack_request(datagram, KEY, now=now)


@pytest.mark.parametrize(
    ("msg", "salt", "message"),
    [
        ('{"protocol":1,"type":0,"query":null,"rsalt":"r"}', "yesterday", "not an integer"),
        ('{"protocol":1,"type":12,"query":null,"rsalt":"r"}', "1000", "unknown request type"),
        ('{"protocol":1,"type":0,"query":[1],"rsalt":"r"}', "1000", "query is a JSON list"),
        ('{"protocol":1,"type":0,"query":null}', "1000", "no 'rsalt'"),
        ('{"type":0,"query":null,"rsalt":"r"}', "1000", "no 'protocol'"),
        ('{"protocol":1,"query":null,"rsalt":"r"}', "1000", "no 'type'"),
        ('{"protocol":1,"type":0,"query":null,"rsalt":5}', "1000", "not a string"),
        ('{"protocol":1,"type":0,"query":null,"rsalt":["ab"]}', "1000", "not a string"),
        (' {"protocol":1,"type":0,"query":null,"rsalt":"r"}', "1000", "starts with white"),
        ('{"protocol":NaN,"type":0,"query":null,"rsalt":"r"}', "1000", "NaN is not JSON"),
        ('{"protocol":1,"type":0,"query":null,"rsalt":"r","x":1}', "1000", "superfluous"),
        ('{"protocol":true,"type":0,"query":null,"rsalt":"r"}', "1000", "not a number"),
        ('{"protocol":1,"type":3,"query":{"4":1},"rsalt":"r"}', "1000", "unknown keys"),
        ('{"protocol":1,"type":3,"query":{"3":[7]},"rsalt":"r"}', "1000", "unknown master field"),
        ('{"protocol":1,"type":3,"query":{"3":"x"},"rsalt":"r"}', "1000", "not a list"),
        ('{"protocol":1,"type":2,"query":{"2":"x"},"rsalt":"r"}', "1000", "list of strings"),
        ('{"protocol":1,"type":2,"query":{"0":5},"rsalt":"r"}', "1000", "not a string"),
        ('{"protocol":1,"type":3,"query":5,"rsalt":"r"}', "1000", "query is a JSON int"),
        ('"just a string"', "1000", "not a JSON object"),
    ],
)
def test_malformed_requests_raise_protocol_errors(msg: str, salt: str, message: str) -> None:
    with pytest.raises(ConfdProtocolError, match=message):
        unpack_request(_signed(msg, salt), KEY, now=1000)


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        # What the daemon answers although it looks odd (checked against 3.0.2).
        ('{"protocol":1,"type":0,"rsalt":"r"}', ConfdRequest(RequestType.PING, None, "r")),
        (
            '{"protocol":2,"type":0.0,"query":null,"rsalt":""}',
            ConfdRequest(RequestType.PING, None, "", 2),
        ),
        (
            '{"protocol":1,"type":3,"query":{"3":[1.5, 0],"0":null},"rsalt":"r"}',
            ConfdRequest(RequestType.CLUSTER_MASTER, {"3": [2, 0]}, "r"),
        ),
        (
            '{"protocol":1,"type":2,"query":{},"rsalt":"r"}',
            ConfdRequest(RequestType.NODE_PIP_BY_INSTANCE_IP, {}, "r"),
        ),
    ],
)
def test_requests_the_daemon_accepts(msg: str, expected: ConfdRequest) -> None:
    assert unpack_request(_signed(msg, "1000"), KEY, now=1000) == (expected, "1000")


def test_the_daemon_reads_the_first_4096_bytes_of_a_request() -> None:
    big = ConfdRequest(RequestType.NODE_ROLE_BYNAME, "x" * 5000)
    with pytest.raises(ConfdClientError, match="reads at most 4096"):
        pack_request(big, KEY)
    msg = json.dumps(big.to_wire())
    with pytest.raises(ConfdMalformedError, match="Unterminated string"):
        unpack_request(_signed(msg, "1000"), KEY, now=1000)
    # What still parses once cut (white space after the envelope) is answered.
    padded = _signed('{"protocol":1,"type":0,"query":null,"rsalt":"r"}', "1000")
    padded += b" " * (5000 - len(padded))
    assert unpack_request(padded, KEY, now=1000)[0].rsalt == "r"


@pytest.mark.parametrize(
    ("salt", "value"),
    [
        ("1000", 1000),
        ("  1000", 1000),
        ("\t1000", 1000),
        ("(1000)", 1000),
        ("( ( 1000 ) )", 1000),
        ("0x3e8", 1000),
        ("0X3E8", 1000),
        ("0o1750", 1000),
        ("0001000", 1000),
        ("1000 ", None),
        ("+1000", None),
        ("1000.0", None),
        ("1e3", None),
        ("0b1111101000", None),
        ("(1000", None),
        ("1000)", None),
        ("", None),
        ("\u0661\u0660\u0660\u0660", None),  # Arabic-Indic digits
    ],
)
def test_timestamps_are_read_as_haskell_reads_an_integer(salt: str, value: int | None) -> None:
    from trioconfd.protocol._request_wire import read_haskell_integer

    assert read_haskell_integer(salt) == value
    msg = '{"protocol":1,"type":0,"query":null,"rsalt":"r"}'
    if value is None:
        with pytest.raises(ConfdSignatureError, match="not an integer"):
            unpack_request(_signed(msg, salt), KEY, now=1000)
    else:
        assert unpack_request(_signed(msg, salt), KEY, now=1000)[1] == salt


def test_request_envelopes_are_read_as_strictly_as_the_daemon_reads_them() -> None:
    msg = '{"protocol":1,"type":0,"query":null,"rsalt":"r"}'
    signature = HmacKey(KEY).sign(("1000" + msg).encode())
    envelope = {"msg": msg, "salt": "1000", "hmac": signature}
    with pytest.raises(ConfdMalformedError, match="does not follow the magic"):
        unpack_request(MAGIC + b" " + json.dumps(envelope).encode(), KEY, now=1000)
    for extra in ({"key_selector": ""}, {"version": "1"}):
        with pytest.raises(ConfdSignatureError, match="msg, salt and hmac only"):
            unpack_request(MAGIC + json.dumps({**envelope, **extra}).encode(), KEY, now=1000)
    upper = {**envelope, "hmac": signature.upper()}
    assert unpack_request(MAGIC + json.dumps(upper).encode(), KEY, now=1000)[0].rsalt == "r"
    # A repeated member, or key in the message, keeps its first value.
    members = f'"msg": {json.dumps(msg)}, "msg": "x", "salt": "1000", "hmac": "{signature}"'
    repeated = MAGIC + ("{" + members + "}").encode()
    assert unpack_request(repeated, KEY, now=1000)[0].type is RequestType.PING
    twice = '{"protocol":1,"type":0,"type":3,"query":null,"rsalt":"r"}'
    assert unpack_request(_signed(twice, "1000"), KEY, now=1000)[0].type is RequestType.PING


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (str(2**64 + 3), RequestType.CLUSTER_MASTER),
        ("1e400", RequestType.PING),
        ("-1e400", RequestType.PING),
        ("3.5", RequestType.NODE_PIP_LIST),
    ],
)
def test_request_numbers_wrap_as_the_daemons_ints(number: str, expected: RequestType) -> None:
    msg = '{"protocol":1,"type":%s,"query":null,"rsalt":["r","s"]}' % number  # noqa: UP031
    request, _ = unpack_request(_signed(msg, "1000"), KEY, now=1000)
    assert (request.type, request.rsalt) == (expected, "rs")


@pytest.mark.fuzz
@given(strategies.replies, strategies.rsalts, strategies.keys)
def test_reply_round_trip(reply: ConfdReply, salt: str, key: bytes | str) -> None:
    assert unpack_reply(pack_reply(reply, salt, key), key) == (reply, salt)


@pytest.mark.fuzz
@given(strategies.requests, strategies.keys, st.integers(min_value=0, max_value=2**40))
def test_request_round_trip(request: ConfdRequest, key: bytes | str, now: int) -> None:
    unpacked, salt = unpack_request(pack_request(request, key, now=now), key, now=now)
    assert (unpacked, salt) == (request, str(now))


@pytest.mark.fuzz
@given(strategies.replies, strategies.rsalts, strategies.keys, strategies.keys)
def test_reply_signed_with_another_key_is_refused(
    reply: ConfdReply, salt: str, key: bytes | str, other: bytes | str
) -> None:
    if HmacKey(key).sign(b"probe") == HmacKey(other).sign(b"probe"):
        return  # the same key (str and bytes spellings of it)
    with pytest.raises(ConfdSignatureError):
        unpack_reply(pack_reply(reply, salt, other), key)


@pytest.mark.fuzz
@given(strategies.datagrams)
def test_arbitrary_bytes_raise_only_protocol_errors(datagram: bytes) -> None:
    for unpack in (unpack_reply, unpack_request):
        with contextlib.suppress(ConfdProtocolError):
            unpack(datagram, KEY)


@pytest.mark.fuzz
@given(strategies.signed_datagrams(KEY))
def test_arbitrary_signed_messages_raise_only_protocol_errors(datagram: bytes) -> None:
    for unpack in (unpack_reply, unpack_request):
        with contextlib.suppress(ConfdProtocolError):
            unpack(datagram, KEY)


@pytest.mark.fuzz
@given(strategies.replies, strategies.rsalts, st.data())
def test_any_flipped_byte_is_caught(reply: ConfdReply, salt: str, data: st.DataObject) -> None:
    datagram = bytearray(pack_reply(reply, salt, KEY))
    position = data.draw(st.integers(min_value=0, max_value=len(datagram) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    datagram[position] ^= flip
    try:
        unpacked = unpack_reply(bytes(datagram), KEY)
    except ConfdProtocolError:
        return
    # A flip JSON decoding cannot see (e.g. "\\u0041" vs "A" escapes) may pass,
    # but then what was signed is unchanged.
    assert unpacked == (reply, salt)


# -- the edges the mutation run found untested --------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        GOOD_MSG + "x",  # trailing garbage after a complete document
        GOOD_MSG + '{"protocol":1}',
        "x" + GOOD_MSG,
    ],
)
def test_a_signed_message_must_be_one_whole_json_document(msg: str) -> None:
    with pytest.raises(ConfdMalformedError, match="not valid JSON"):
        unpack_reply(_signed(msg, "s"), KEY)
    request = '{"protocol":1,"type":0,"query":null,"rsalt":"r"}'
    with pytest.raises(ConfdMalformedError, match="not valid JSON"):
        unpack_request(_signed(request + "x", "1000"), KEY, now=1000)


def _padded_reply(size: int) -> bytes:
    """A signed reply datagram of exactly ``size`` bytes."""
    base = len(_signed('{"protocol":1,"status":0,"answer":"","serial":1}', "s"))
    msg = json.dumps({"protocol": 1, "status": 0, "answer": "x" * (size - base), "serial": 1})
    datagram = _signed(msg.replace(", ", ",").replace(": ", ":"), "s")
    assert len(datagram) == size
    return datagram


def test_datagrams_of_exactly_the_size_limit() -> None:
    reply, _ = unpack_reply(_padded_reply(MAX_DATAGRAM_SIZE), KEY)
    assert len(reply.answer) > 61000
    with pytest.raises(ConfdMalformedError, match="over the 65527-byte limit"):
        unpack_reply(_padded_reply(MAX_DATAGRAM_SIZE + 1), KEY)
    base = len(pack_reply(ConfdReply(ReplyStatus.OK, "", 1), "s", KEY))
    largest = "x" * (MAX_DATAGRAM_SIZE - base)
    packed = pack_reply(ConfdReply(ReplyStatus.OK, largest, 1), "s", KEY)
    assert len(packed) == MAX_DATAGRAM_SIZE  # the largest reply it packs
    with pytest.raises(ConfdClientError, match="datagram limit"):
        pack_reply(ConfdReply(ReplyStatus.OK, largest + "x", 1), "s", KEY)


def test_requests_of_exactly_the_size_limit() -> None:
    def request_of(size: int) -> ConfdRequest:
        base = len(pack_request(ConfdRequest(RequestType.NODE_ROLE_BYNAME, "", "r"), KEY, now=1000))
        return ConfdRequest(RequestType.NODE_ROLE_BYNAME, "n" * (size - base), "r")

    largest = pack_request(request_of(MAX_REQUEST_SIZE), KEY, now=1000)
    assert len(largest) == MAX_REQUEST_SIZE
    assert unpack_request(largest, KEY, now=1000)[0] == request_of(MAX_REQUEST_SIZE)
    with pytest.raises(ConfdClientError, match="reads at most 4096"):
        pack_request(request_of(MAX_REQUEST_SIZE + 1), KEY, now=1000)
    one_over = _signed(json.dumps(request_of(MAX_REQUEST_SIZE + 1).to_wire()), "1000")
    assert len(one_over) > MAX_REQUEST_SIZE
    with pytest.raises(ConfdMalformedError, match="Unterminated"):  # cut where the daemon cuts
        unpack_request(one_over, KEY, now=1000)


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview, lambda key: key.decode()])
def test_keys_as_bytes_bytearray_memoryview_or_str(make: object) -> None:
    key = make(KEY)  # type: ignore[operator]
    datagram = pack_reply(ConfdReply(ReplyStatus.OK, "a", 2), "s", key)
    assert datagram == pack_reply(ConfdReply(ReplyStatus.OK, "a", 2), "s", KEY)
    assert unpack_reply(datagram, HmacKey(key))[0].answer == "a"


@given(
    key=st.one_of(
        st.binary(min_size=1, max_size=200),
        st.integers(60, 70).map(lambda size: bytes(range(size))),  # around SHA-1's block
    ),
    data=st.binary(max_size=2000),
)
def test_signatures_are_rfc_2104_hmac_sha1_for_keys_of_any_length(key: bytes, data: bytes) -> None:
    # Keyed as two SHA-1 states: keys longer than the 64-byte block are
    # hashed first, shorter ones padded; a key text signs as its UTF-8.
    expected = hmac.new(key, data, hashlib.sha1).hexdigest()
    assert HmacKey(key).sign(data) == expected
    assert HmacKey(key).verify(data, expected)
    assert not HmacKey(key + b"x").verify(data, expected)


def test_rsalts_drawn_together_are_never_shared_by_threads() -> None:
    # Drawn 64 at a time: threads taking them at once each get their own.
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        into.extend(new_rsalt() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [rsalt for into in drawn for rsalt in into]
    assert len(set(every)) == len(every) == 16000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_draws_rsalts_of_its_own() -> None:
    # The parent holds rsalts drawn ahead; a child that used them would send
    # the very rsalts its parent sends next.
    new_rsalt()
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.write(writing, new_rsalt().encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as from_child:
        childs = from_child.read().decode()
    os.waitpid(child, 0)
    assert len(childs) == 36
    assert childs != new_rsalt()


def test_rsalts_are_uuid4_strings() -> None:
    import uuid

    seen = set()
    for _ in range(200):
        rsalt = ConfdRequest(RequestType.PING).rsalt
        parsed = uuid.UUID(rsalt)
        assert str(parsed) == rsalt
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        seen.add(rsalt)
    assert len(seen) == 200
    # The random hex digits vary (none is stuck by the formatting); the
    # version digit is always 4, the variant digit one of 8, 9, a, b.
    for position in (0, 7, 9, 12, 15, 17, 20, 22, 24, 35):
        assert len({salt[position] for salt in seen}) > 4
    assert {salt[14] for salt in seen} == {"4"}
    assert {salt[19] for salt in seen} == set("89ab")


def test_request_to_wire() -> None:
    request = ConfdRequest(RequestType.NODE_ROLE_BYNAME, "node1", "r")
    assert request.to_wire() == {"protocol": 1, "type": 1, "query": "node1", "rsalt": "r"}


def test_key_repr_is_exactly_hidden() -> None:
    assert repr(HmacKey(b"secret")) == "<HmacKey (hidden)>"


@pytest.mark.parametrize("salt", ["9" * 20, "9" * 21, "9" * 40])
def test_long_timestamps_are_far_off(salt: str) -> None:
    msg = '{"protocol":1,"type":0,"query":null,"rsalt":"r"}'
    with pytest.raises(ConfdSignatureError, match="timestamp is"):
        unpack_request(_signed(msg, salt), KEY, now=1000)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(number: str) -> None:
    msg = '{"protocol":1,"type":%s,"query":null,"rsalt":"r"}' % number  # noqa: UP031
    with pytest.raises(ConfdMalformedError, match="is not JSON"):
        unpack_request(_signed(msg, "1000"), KEY, now=1000)


# -- the envelope is read before any general JSON parse ------------------------


@pytest.mark.parametrize("garbage", COSTLY_GARBAGE.values(), ids=COSTLY_GARBAGE)
def test_costly_garbage_never_reaches_a_json_parser(
    garbage: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused by the envelope reader; neither JSON decoder nor the HMAC is run."""
    from trioconfd.protocol import _wire

    def must_not_run(*args: object) -> None:
        raise AssertionError("a general JSON parse or an HMAC ran on garbage")

    for name in ("_scan_json", "_decode_json"):
        monkeypatch.setattr(_wire, name, must_not_run)
    monkeypatch.setattr(HmacKey, "verify", must_not_run)
    with pytest.raises(ConfdMalformedError, match=r"not a JSON object of strings|over the"):
        unpack_reply(garbage, KEY)
    with pytest.raises(ConfdMalformedError):
        unpack_request(garbage[:MAX_REQUEST_SIZE], KEY)


def test_the_envelope_reader_reads_strings_exactly_as_json_does() -> None:
    from trioconfd.protocol._wire import envelope_members

    text = '{ "msg" : "a\\"b\\\\c\\/d\\u00e9\\ud83d\\ude00\\n" ,"salt":"\\u0073"\t}\r\n'
    assert envelope_members(text) == json.loads(text)
    assert envelope_members("{}") == {}
    # Duplicate names: the last wins, as in json.loads.
    assert envelope_members('{"msg":"a","msg":"b"}') == {"msg": "b"}


@pytest.mark.fuzz
@given(strategies.signed_replies_in_any_spelling(KEY))
def test_no_valid_signed_datagram_is_refused_by_the_envelope_reader(
    signed: tuple[bytes, ConfdReply, str],
) -> None:
    datagram, reply, salt = signed
    assume(len(datagram) <= MAX_DATAGRAM_SIZE)
    assert unpack_reply(datagram, KEY) == (reply, salt)


_envelope_like_texts = st.one_of(
    st.text(alphabet='{}[]":, \t\\u0123abfnrt/', max_size=40),
    st.dictionaries(st.text(max_size=5), strategies.json_values, max_size=5).map(json.dumps),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=6).map(json.dumps),
)


@pytest.mark.fuzz
@given(
    st.one_of(
        _envelope_like_texts,
        st.lists(st.tuples(st.text(max_size=6), st.text(max_size=12)), max_size=6).map(
            lambda members: (
                "{" + ",".join(f"{json.dumps(n)}:{json.dumps(v)}" for n, v in members) + "}"
            )
        ),
    )
)
def test_the_envelope_readers_fast_path_agrees_with_its_token_reader(text: str) -> None:
    """A flat envelope read in one call of the C decoder reads as token by token."""
    from trioconfd.protocol._wire import _read_members, envelope_members

    try:
        expected = _read_members(text, strict=True, first_wins=False)
    except ConfdMalformedError:
        with pytest.raises(ConfdMalformedError):
            envelope_members(text)
        return
    assert envelope_members(text) == expected


def test_the_envelope_readers_fast_path_is_taken_and_declines_what_it_must(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trioconfd.protocol import _wire

    calls: list[str] = []
    resumed_at: list[int] = []
    real_reader = _wire._read_members

    def counting_reader(text: str, **how: Any) -> dict[str, str]:
        calls.append(text)
        resumed_at.append(how.get("position", 0))
        return real_reader(text, **how)

    monkeypatch.setattr(_wire, "_read_members", counting_reader)
    # ganeti-confd's layout (a real reply's envelope): read without the token reader.
    canonical = (
        '{"hmac":"c6198cad550d2451ee0c6dabb53367886327054f","msg":"{\\"protocol\\":1,'
        '\\"status\\":0,\\"answer\\":\\"node1\\",\\"serial\\":7}",'
        '"salt":"42627932-f3ee-4ce7-9df2-f715729437ce"}'
    )
    assert _wire.envelope_members(canonical) == json.loads(canonical)
    assert _wire.envelope_members(canonical, first_wins=True) == json.loads(canonical)
    assert calls == []
    # A long one too (an IP list's): the layout, not the size, decides.
    longer = canonical.replace("node1", "n" * 60000)
    assert _wire.envelope_members(longer) == json.loads(longer)
    assert calls == []
    # Anything else goes on to the token reader: another order, spaces, a
    # fourth member, a name spelled with an escape, text after it.
    others = [
        '{"msg":"m","salt":"s","hmac":"h"}',
        '{"hmac":"h", "msg":"m","salt":"s"}',
        '{"hmac":"h","msg":"m","salt":"s","key_selector":"k"}',
        '{"hmac":"h","msg":"m","sal\\u0074":"s"}',
        '{"hmac":"h","msg":"m","salt":"s"} ',
    ]
    for text in others:
        assert _wire.envelope_members(text) == json.loads(text)
    # What began in the layout goes on from where it left it: nothing is read twice.
    assert resumed_at == [0, 11, 32, 21, 32]
    refused = ['{"hmac":"h","msg":1,"salt":"s"}', '{"hmac":"h","msg":"m","salt":"s"}x']
    for text in refused:
        with pytest.raises(ConfdMalformedError):
            _wire.envelope_members(text)
    assert calls == [*others, *refused]
    # A control character, a bad escape or no end in one of its strings: refused
    # there, in the token reader's words.
    calls.clear()
    for text in (
        '{"hmac":"\x01","msg":"m","salt":"s"}',
        '{"hmac":"h","msg":"\\x","salt":"s"}',
        '{"hmac":"h","msg":"m","salt":"s',
    ):
        with pytest.raises(ConfdMalformedError) as fast:
            _wire.envelope_members(text)
        with pytest.raises(ConfdMalformedError) as slow:
            real_reader(text, strict=True, first_wins=False)
        assert str(fast.value) == str(slow.value)
    assert calls == []
    # Read as 8-bit text (not strict), a control character is a character,
    # in any of its strings.
    for spoiled in ("hmac", "msg", "salt"):
        members = {"hmac": "h", "msg": "m", "salt": "s", spoiled: "\x01"}
        text = '{{"hmac":"{hmac}","msg":"{msg}","salt":"{salt}"}}'.format(**members)
        assert _wire.envelope_members(text, strict=False) == members
    # Where it departs from the layout, the reading goes on as the token
    # reader's would: the same members (in the same order), or the same fault.
    for text in (
        '{"hmac":"h","msg":"m","salt":"s"x',  # no closing brace
        '{"hmac":"h","msg":"m","salt":"s"}x',  # text after it
        '{"hmac":"h" ,"msg":"m","salt":"s"}',  # a space before a comma
        '{"hmac":"h","msg":"m" ,"salt":"s"}',
        '{"hmac":"h","msg":"m","salt":"s" }',
        '{"hmac":"h","msg":"m","salt":"s","a":"1"}',  # a fourth member
        '{"hmac":"h","msg":"m","salt":"s","a":"1","b":"2"}',  # a fifth: refused
        '{"hmac":"h","msg":"m","salt":"s","hmac":"2"}',  # a name again
    ):
        for first_wins in (False, True):
            try:
                expected = real_reader(text, strict=True, first_wins=first_wins)
            except ConfdMalformedError as slow:
                refusal = str(slow)
            else:
                members = _wire.envelope_members(text, first_wins=first_wins)
                assert list(members.items()) == list(expected.items())
                continue
            with pytest.raises(ConfdMalformedError) as fast:
                _wire.envelope_members(text, first_wins=first_wins)
            assert str(fast.value) == refusal


_canonical_envelopes = st.tuples(
    st.text(max_size=8), st.text(max_size=30), st.text(max_size=8), st.text(max_size=4)
).map(
    lambda parts: (
        f'{{"hmac":{json.dumps(parts[0])},"msg":{json.dumps(parts[1], ensure_ascii=False)},'
        f'"salt":{json.dumps(parts[2])}}}{parts[3]}'
    )
)


@pytest.mark.fuzz
@given(
    st.one_of(
        _canonical_envelopes,
        # cut short, or with a character changed, anywhere
        st.tuples(_canonical_envelopes, st.integers(0, 80), st.sampled_from('"\\,:}{ \x01a')).map(
            lambda cut: cut[0][: cut[1]] + cut[2] + cut[0][cut[1] + 1 :]
        ),
        _canonical_envelopes.map(lambda text: text[: len(text) // 2]),
        # whitespace, or more members, where the layout has none
        st.tuples(
            _canonical_envelopes,
            st.sampled_from([" ", ',"a":"1"', ',"hmac":"2"', ',"a":"1","b":"2"', ",", ":"]),
            st.integers(0, 80),
        ).map(lambda cut: cut[0][: cut[2]] + cut[1] + cut[0][cut[2] :]),
    ),
    st.booleans(),
    st.booleans(),
)
def test_the_envelope_readers_canonical_path_agrees_with_its_token_reader(
    text: str, strict: bool, first_wins: bool
) -> None:
    """What begins in ganeti-confd's layout reads as it does token by token (the
    same members in the same order), or is refused in the same words."""
    from trioconfd.protocol._wire import _read_members, envelope_members

    try:
        expected = _read_members(text, strict=strict, first_wins=first_wins)
    except ConfdMalformedError as slow:
        refusal = str(slow)
    else:
        members = envelope_members(text, strict=strict, first_wins=first_wins)
        assert list(members.items()) == list(expected.items())
        return
    with pytest.raises(ConfdMalformedError) as fast:
        envelope_members(text, strict=strict, first_wins=first_wins)
    assert str(fast.value) == refusal


@pytest.mark.fuzz
@given(_envelope_like_texts)
def test_the_envelope_reader_accepts_only_what_json_reads_the_same(text: str) -> None:
    """Sound: what it accepts, json.loads reads as the same flat object of strings."""
    from trioconfd.protocol._wire import envelope_members

    try:
        members = envelope_members(text)
    except ConfdMalformedError:
        try:
            value = json.loads(text)
        except ValueError:
            return
        # Refused although JSON: then it is not a flat object of up to four strings.
        assert not (
            isinstance(value, dict)
            and len(value) <= 4
            and text.count(":") <= 4
            and all(isinstance(v, str) for v in value.values())
        ) or any(ord(c) >= 0xD800 and ord(c) < 0xE000 for c in text)
        return
    assert members == json.loads(text)


# -- ganeti-confd 3.0's 8-bit replies -------------------------------------------


def _as_the_daemon_writes(reply: ConfdReply, salt: str) -> bytes:
    """Signed over the text's UTF-8, written one byte (the low 8 bits) per character."""
    msg = json.dumps(reply.to_wire(), ensure_ascii=False, separators=(",", ":"))
    signature = HmacKey(KEY).sign((salt + msg).encode("utf-8"))
    envelope = json.dumps({"hmac": signature, "msg": msg, "salt": salt}, ensure_ascii=False)
    return MAGIC + bytes(ord(char) & 0xFF for char in envelope)


@pytest.mark.parametrize(
    "name",
    [
        "café.example.com",  # not UTF-8 as written
        "Ã©tÃ©.example.com",  # written 8-bit, these bytes are valid UTF-8 for "été"
        "ÿ\x80\x9f.example.com",
    ],
)
def test_the_daemons_8_bit_replies_are_read_as_it_wrote_them(name: str) -> None:
    reply = ConfdReply(ReplyStatus.OK, {"name": name, "tags": [name]}, 7)
    datagram = _as_the_daemon_writes(reply, "rsalt")
    assert not datagram.isascii()
    assert unpack_reply(datagram, KEY) == (reply, "rsalt")


@pytest.mark.parametrize("name", ["węzeł.example.com", "ŀ", "\U0001f600", "ĉ"])
def test_characters_beyond_u00ff_are_lost_in_the_daemons_writing(name: str) -> None:
    """What it signed is not what it sent: such a reply never authenticates."""
    datagram = _as_the_daemon_writes(ConfdReply(ReplyStatus.OK, name, 7), "rsalt")
    with pytest.raises(ConfdProtocolError):
        unpack_reply(datagram, KEY)


def test_requests_are_read_a_byte_a_character_as_the_daemon_reads_them() -> None:
    # ganeti-confd reads each byte as a character (Latin-1) and checks the
    # signature over the text in UTF-8: a raw 0xE9 is "é", a raw UTF-8 "é"
    # is "Ã©", whose signature then fails (tests/test_fidelity.py checks both
    # against the daemon).
    request = ConfdRequest(RequestType.NODE_ROLE_BYNAME, "café", "r")
    msg = json.dumps(request.to_wire(), ensure_ascii=False)
    signature = HmacKey(KEY).sign(("1000" + msg).encode("utf-8"))
    envelope = json.dumps({"hmac": signature, "msg": msg, "salt": "1000"}, ensure_ascii=False)
    assert unpack_request(MAGIC + envelope.encode("latin-1"), KEY, now=1000)[0] == request
    with pytest.raises(ConfdSignatureError, match="HMAC mismatch"):
        unpack_request(MAGIC + envelope.encode("utf-8"), KEY, now=1000)
    escaped = json.dumps({"hmac": signature, "msg": msg, "salt": "1000"})  # \u00e9
    assert unpack_request(MAGIC + escaped.encode(), KEY, now=1000)[0] == request


def test_an_8_bit_reply_signed_with_another_key_is_refused() -> None:
    datagram = _as_the_daemon_writes(ConfdReply(ReplyStatus.OK, "café", 7), "rsalt")
    with pytest.raises(ConfdSignatureError, match="HMAC mismatch"):
        unpack_reply(datagram, b"another key")


def test_a_reply_no_request_awaits_is_refused_on_its_envelope() -> None:
    # Its salt is checked first: a wrong signature, a message that is not
    # JSON, 8-bit text, none of it is read (each would fail otherwise).
    awaited = {"live"}
    stray = [
        _signed(GOOD_MSG, "gone"),
        _signed(GOOD_MSG, "gone", b"another key"),
        _signed("{not json", "gone"),
        _as_the_daemon_writes(ConfdReply(ReplyStatus.OK, "café", 7), "gone"),
    ]
    for datagram in stray:
        with pytest.raises(ConfdUnknownSaltError) as caught:
            unpack_reply(datagram, KEY, awaited=awaited)
        assert caught.value.salt == "gone"
        assert isinstance(caught.value, ConfdProtocolError)
    # An awaited salt is checked as ever; without ``awaited``, every salt is.
    assert unpack_reply(_signed(GOOD_MSG, "live"), KEY, awaited=awaited)[1] == "live"
    with pytest.raises(ConfdSignatureError):
        unpack_reply(_signed(GOOD_MSG, "live", b"another key"), KEY, awaited=awaited)
    with pytest.raises(ConfdMalformedError):
        unpack_reply(_signed("{not json", "live"), KEY, awaited=awaited)
    assert (
        unpack_reply(
            _as_the_daemon_writes(ConfdReply(ReplyStatus.OK, "café", 7), "live"),
            KEY,
            awaited=awaited,
        )[1]
        == "live"
    )
    assert unpack_reply(_signed(GOOD_MSG, "gone"), KEY)[1] == "gone"
    # What is not an envelope is malformed whatever the salt.
    with pytest.raises(ConfdMalformedError):
        unpack_reply(MAGIC + b'{"salt": "gone"', KEY, awaited=awaited)


def test_an_8_bit_reply_is_read_both_ways_before_its_salt_is_refused() -> None:
    # ganeti-confd 3.0 writes "Ã©-2" byte for character: as UTF-8 those
    # bytes read "é-2", a salt no request awaits; read as it wrote them,
    # the awaited one.
    reply = ConfdReply(ReplyStatus.OK, "x", 7)  # all of it valid UTF-8 as written
    datagram = _as_the_daemon_writes(reply, "Ã©-2")
    assert datagram.decode("utf-8")  # so it is read as UTF-8 first
    assert unpack_reply(datagram, KEY, awaited={"Ã©-2"}) == (reply, "Ã©-2")
    with pytest.raises(ConfdUnknownSaltError):
        unpack_reply(datagram, KEY, awaited={"é-2"})  # signed as "Ã©-2": read so, not awaited
    # An ASCII datagram is read once.
    with pytest.raises(ConfdUnknownSaltError):
        unpack_reply(_signed(GOOD_MSG, "gone"), KEY, awaited={"live"})
