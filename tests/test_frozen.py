"""Frozen dataclasses made on the hot path are the frozen dataclasses users make."""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioconfd.protocol import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdReply,
    ConfdRequest,
    PeerReply,
    QueryResult,
    ReplyStatus,
    RequestType,
    pack_reply,
    unpack_reply,
)
from trioconfd.protocol._aggregate import _new_result
from trioconfd.protocol._frozen import quick_constructor
from trioconfd.protocol._messages import new_request
from trioconfd.protocol._wire import _new_reply

_values = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers()))
_replies = st.builds(
    ConfdReply, st.sampled_from(ReplyStatus), _values, st.integers(), st.integers(0, 3)
)
_addresses = st.tuples(st.sampled_from(["127.0.0.1", "::1"]), st.integers(1, 65535))


def _same(quick: Any, made: Any) -> None:
    """``quick`` is what the class's own constructor made: equal, and frozen."""
    assert type(quick) is type(made)
    assert quick == made
    try:
        expected = hash(made)
    except TypeError:  # a list or dict inside
        with pytest.raises(TypeError):
            hash(quick)
    else:
        assert hash(quick) == expected
    assert repr(quick) == repr(made)
    first = dataclasses.fields(quick)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(quick, first, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(quick, first)
    assert dataclasses.replace(quick) == made
    assert pickle.loads(pickle.dumps(quick)) == made
    assert copy.copy(quick) == made
    assert copy.deepcopy(quick) == made
    assert dataclasses.astuple(quick) == dataclasses.astuple(made)
    assert type(quick).__match_args__ == type(made).__match_args__


@given(st.sampled_from(ReplyStatus), _values, st.integers(), st.integers(0, 3))
def test_a_quick_reply_is_a_reply(
    status: ReplyStatus, answer: Any, serial: int, protocol: int
) -> None:
    _same(
        _new_reply(status, answer, serial, protocol), ConfdReply(status, answer, serial, protocol)
    )
    _same(_new_reply(status, answer, serial), ConfdReply(status, answer, serial))


@given(
    st.tuples(
        st.one_of(st.none(), _replies),
        st.lists(st.builds(PeerReply, _addresses, _replies), max_size=3).map(tuple),
        st.integers(0, 9),
        st.integers(0, 9),
        st.booleans(),
        st.booleans(),
    )
)
def test_a_quick_result_is_a_result(
    args: tuple[ConfdReply | None, tuple[PeerReply, ...], int, int, bool, bool],
) -> None:
    # (best, replies, sent, needed, timed_out, consistent)
    _same(_new_result(*args), QueryResult(*args))
    _same(
        _new_result(*args, timeout=1.5, saturated=True),
        QueryResult(*args, timeout=1.5, saturated=True),
    )
    # Every field by position, each a value of its own: none lands in another's place.
    full = dataclasses.replace(
        QueryResult(*args),
        send_errors=((("127.0.0.2", 1), "refused"),),
        discards=(("malformed", 2),),
        timeout=2.5,
        saturated=True,
        silent=(("127.0.0.3", 3),),
        unreachable=((("127.0.0.4", 4), "port unreachable"),),
        round_trip=0.25,
        key_ends_with_newline=False,
    )
    values = [getattr(full, spec.name) for spec in dataclasses.fields(full)]
    _same(_new_result(*values), full)


@given(st.sampled_from(RequestType), st.one_of(st.none(), st.text(max_size=5), st.just({"1": 2})))
def test_a_quick_request_is_a_request(kind: RequestType, query: Any) -> None:
    quick = new_request(int(kind), query)
    assert quick.type is kind
    assert not quick.sent
    assert len(quick.rsalt) == 36
    made = ConfdRequest(kind, query, quick.rsalt)
    _same(quick, made)
    quick.mark_sent()
    assert quick.sent
    assert quick.renewed().rsalt != quick.rsalt


class _Flag(enum.IntEnum):
    PING = 0
    UNKNOWN = 99


class _Query(dict[str, Any]):
    pass


@pytest.mark.parametrize(
    "kind",
    [*RequestType, 0, 5, 99, -1, True, False, 1.0, "1", None, 2**70, _Flag.PING, _Flag.UNKNOWN],
)
@pytest.mark.parametrize(
    "query", [None, "x", {"1": 2}, _Query(a=1), collections.OrderedDict(), [1], b"x", 3]
)
def test_a_quick_request_takes_and_refuses_what_the_constructor_does(kind: Any, query: Any) -> None:
    def made(construct: Any) -> Any:
        try:
            request = construct(kind, query)
        except Exception as exc:  # the failure itself is compared
            return type(exc), str(exc)
        return request.type, request.query, type(request.rsalt), request.protocol, request.sent

    assert made(new_request) == made(ConfdRequest)


def test_a_quick_request_checks_what_the_constructor_checks() -> None:
    with pytest.raises(ConfdArgumentError, match="unknown request type 99"):
        new_request(99)
    with pytest.raises(ConfdArgumentError, match="unknown request type True"):
        new_request(True)
    with pytest.raises(ConfdArgumentTypeError, match="query must be None, a string or a dict"):
        new_request(RequestType.PING, 3)  # type: ignore[arg-type]


def test_an_unpacked_reply_is_frozen() -> None:
    reply, _ = unpack_reply(pack_reply(ConfdReply(ReplyStatus.OK, "a", 1), "salt", b"k"), b"k")
    assert type(reply) is ConfdReply
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.serial = 2  # type: ignore[misc]


def test_only_frozen_slotted_dataclasses_are_made_quickly() -> None:
    @dataclasses.dataclass(slots=True)
    class Plain:
        a: int

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            raise AssertionError("never called")

    @dataclasses.dataclass(frozen=True, slots=True)
    class Interned:
        a: int

        def __new__(cls, *args: Any) -> Any:
            return super().__new__(cls)

    @dataclasses.dataclass(frozen=True, slots=True, init=False)
    class NoInit:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class KeywordFirst:
        a: int = dataclasses.field(default=1, kw_only=True)
        b: int = 2

    for cls in (Plain, Unslotted, int):
        with pytest.raises(TypeError, match="not a frozen, slotted dataclass"):
            quick_constructor(cls)
    for made_otherwise in (Interned, NoInit):
        with pytest.raises(TypeError, match="not made by its dataclass __init__ alone"):
            quick_constructor(made_otherwise)
    quick = quick_constructor(KeywordFirst)
    assert quick(5) == KeywordFirst(5) == KeywordFirst(a=1, b=5)
    assert quick(5, a=3) == KeywordFirst(5, a=3)
    with pytest.raises(TypeError, match="__post_init__"):
        quick_constructor(Checked)
    assert quick_constructor(Checked, checked_by_caller=True)(1).a == 1
