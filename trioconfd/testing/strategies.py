"""Hypothesis strategies for confd messages and datagrams (needs ``hypothesis``)."""

from __future__ import annotations

import json
from typing import Any

try:
    import hypothesis  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "trioconfd.testing.strategies needs Hypothesis: pip install 'trioconfd[test]'"
    ) from exc

from hypothesis import strategies as st

from ..protocol import (
    MAGIC,
    ConfdReply,
    ConfdRequest,
    HmacKey,
    Query,
    QueryKey,
    ReplyStatus,
    RequestType,
)

#: Any JSON value (no NaN or infinities, which JSON cannot carry).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

_names = st.text(max_size=20)

#: A request's query in the canonical form the daemon decodes.
queries: st.SearchStrategy[Query] = (
    st.none()
    | st.text(max_size=40)
    | st.fixed_dictionaries(
        {},
        optional={
            QueryKey.LINK.value: _names,
            QueryKey.IP.value: _names,
            QueryKey.IPLIST.value: st.lists(_names, min_size=1, max_size=4),
            QueryKey.FIELDS.value: st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=4),
        },
    )
)

#: How many peers a client may contact.
peer_counts: st.SearchStrategy[int] = st.integers(min_value=1, max_value=64)

rsalts: st.SearchStrategy[str] = st.text(min_size=1, max_size=40)

#: HMAC keys, as bytes or as str.
keys: st.SearchStrategy[bytes | str] = st.binary(min_size=1, max_size=64) | st.text(
    min_size=1, max_size=64
)

requests: st.SearchStrategy[ConfdRequest] = st.builds(
    ConfdRequest,
    type=st.sampled_from(RequestType),
    query=queries,
    rsalt=rsalts,
    protocol=st.integers(min_value=0, max_value=2**31),
)

replies: st.SearchStrategy[ConfdReply] = st.builds(
    ConfdReply,
    status=st.sampled_from(ReplyStatus),
    answer=json_values,
    serial=st.integers(min_value=0, max_value=2**53),
    protocol=st.integers(min_value=0, max_value=2**31),
)

#: Bytes that look more or less like confd datagrams: raw, magic-prefixed, or
#: a magic-prefixed JSON envelope with arbitrary fields.
datagrams: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda tail: MAGIC + tail),
    st.text(max_size=200).map(lambda text: MAGIC + text.encode("utf-8", "surrogatepass")),
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(("msg", "salt", "hmac", "key_selector"), json_values),
    ).map(lambda envelope: MAGIC + json.dumps(envelope).encode()),
)

_FIELDS = ("protocol", "status", "answer", "serial", "type", "query", "rsalt")

#: Message texts: arbitrary text, any JSON, or objects with the protocol's
#: field names holding arbitrary values.
message_texts: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=100),
    json_values.map(json.dumps),
    st.fixed_dictionaries({}, optional=dict.fromkeys(_FIELDS, json_values)).map(json.dumps),
)


def signed_datagrams(key: bytes | str) -> st.SearchStrategy[bytes]:
    """Datagrams correctly signed with ``key`` around arbitrary messages and salts.

    They pass the HMAC check, so they exercise what parses the message after it.
    """
    hmac_key = HmacKey(key)

    def sign(msg: str, salt: str) -> bytes:
        signature = hmac_key.sign((salt + msg).encode("utf-8"))
        return MAGIC + json.dumps({"hmac": signature, "msg": msg, "salt": salt}).encode()

    salts = st.text(max_size=30) | st.integers(min_value=0, max_value=2**40).map(str)
    return st.builds(sign, message_texts, salts)


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f"}
_SHORT_ESCAPES.update({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _u_escape(char: str, upper: bool) -> str:
    code = ord(char)
    units: tuple[int, ...]
    if code > 0xFFFF:  # a surrogate pair, as JSON writes characters beyond the BMP
        code -= 0x10000
        units = (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
    else:
        units = (code,)
    text = "".join(f"\\u{unit:04x}" for unit in units)
    return text.upper().replace("\\U", "\\u") if upper else text


@st.composite
def _json_string_spellings(draw: st.DrawFn, value: str) -> str:
    """``value`` as a JSON string literal, each character written in a legal way drawn at random."""
    parts = ['"']
    for char in value:
        ways = ["u", "U"]
        if char in _SHORT_ESCAPES:
            ways.append("short")
        if char not in '"\\' and ord(char) >= 0x20:
            ways.append("literal")
        way = draw(st.sampled_from(ways))
        if way == "literal":
            parts.append(char)
        elif way == "short":
            parts.append(_SHORT_ESCAPES[char])
        else:
            parts.append(_u_escape(char, upper=way == "U"))
    parts.append('"')
    return "".join(parts)


_json_space = st.text(alphabet=" \t\n\r", max_size=3)


@st.composite
def signed_replies_in_any_spelling(
    draw: st.DrawFn, key: bytes | str
) -> tuple[bytes, ConfdReply, str]:
    """A reply signed with ``key``, its envelope written in any legal JSON way.

    Members in any order (with a ``key_selector`` at times), any JSON
    whitespace between tokens, each character of each string literal or
    escaped. Returns the datagram, the reply and its salt: every such datagram
    is valid and must be accepted.
    """
    reply = draw(replies)
    salt = draw(rsalts)
    msg = json.dumps(reply.to_wire(), ensure_ascii=draw(st.booleans()))
    members = {"msg": msg, "salt": salt}
    selector = draw(st.none() | st.text(max_size=10))
    signed = salt + msg if selector is None else salt + selector + msg
    if selector is not None:
        members["key_selector"] = selector
    members["hmac"] = HmacKey(key).sign(signed.encode("utf-8"))
    order = draw(st.permutations(list(members)))
    space = [draw(_json_space) for _ in range(4 * len(order) + 2)]
    items = []
    for index, name in enumerate(order):
        before, after_name, after_colon, after_value = space[4 * index + 1 : 4 * index + 5]
        items.append(
            before
            + draw(_json_string_spellings(name))
            + after_name
            + ":"
            + after_colon
            + draw(_json_string_spellings(members[name]))
            + after_value
        )
    envelope = space[0] + "{" + ",".join(items) + "}" + space[-1]
    return MAGIC + envelope.encode("utf-8"), reply, salt


#: Distinct peer addresses (IPv4, port 1814).
addresses: st.SearchStrategy[tuple[str, int]] = st.ip_addresses(v=4).map(lambda ip: (str(ip), 1814))

#: A few serials and answers, so that generated replies often share them.
_serials = st.sampled_from([0, 1, 2, 10, 11, 2**31])
_answers = st.sampled_from(["node1", "node2", 0, 1, [], ["192.0.2.1"], None])


@st.composite
def reply_sets(draw: st.DrawFn, max_peers: int = 12) -> list[tuple[tuple[str, int], ConfdReply]]:
    """Replies from distinct peers, with serials and answers that often repeat or clash."""
    peers = draw(st.lists(addresses, min_size=1, max_size=max_peers, unique=True))
    return [
        (
            peer,
            ConfdReply(
                status=draw(st.sampled_from(ReplyStatus)),
                answer=draw(_answers),
                serial=draw(_serials),
            ),
        )
        for peer in peers
    ]
