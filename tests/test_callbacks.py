"""The Ganeti-style callback helpers, fed upcalls directly and through a client."""

from __future__ import annotations

from typing import Any

import pytest

from trioconfd import (
    ConfdClientError,
    ConfdReply,
    ConfdRequest,
    ReplyStatus,
    RequestType,
    Upcall,
    UpcallType,
    open_confd_client,
)
from trioconfd.callbacks import CountingCallback, FilterCallback, StoreResultCallback

from .responders import run_responders, settle

REQUEST = ConfdRequest(RequestType.PING, rsalt="s1")


def reply(answer: Any, serial: int, salt: str = "s1") -> Upcall:
    return Upcall(
        UpcallType.REPLY,
        salt,
        REQUEST,
        None,
        None,  # type: ignore[arg-type]
        server_reply=ConfdReply(ReplyStatus.OK, answer, serial),
        server_ip="192.0.2.1",
        server_port=1814,
    )


def expire(salt: str = "s1") -> Upcall:
    return Upcall(UpcallType.EXPIRE, salt, REQUEST, None, None)  # type: ignore[arg-type]


def test_filter_passes_only_news() -> None:
    passed: list[Upcall] = []
    spy = FilterCallback(passed.append)
    spy(reply("a", 5))  # first: passes
    spy(reply("a", 5))  # same: filtered
    spy(reply("a", 6))  # newer, same answer: filtered
    spy(reply("b", 7))  # newer, new answer: passes
    spy(reply("old", 2))  # older: filtered
    assert [u.server_reply.answer for u in passed if u.server_reply] == ["a", "b"]
    assert spy.consistent["s1"]
    spy(reply("c", 7))  # same serial, other answer: filtered, inconsistent
    assert not spy.consistent["s1"]
    spy(expire())
    assert passed[-1].type is UpcallType.EXPIRE
    assert "s1" not in spy.consistent


def test_counting() -> None:
    passed: list[Upcall] = []
    counter = CountingCallback(passed.append)
    counter.register_query("s1")
    counter.register_query("s2")
    with pytest.raises(ConfdClientError, match="registered already"):
        counter.register_query("s1")
    counter(reply("x", 1, "s1"))
    assert not counter.all_answered()
    counter(reply("x", 1, "s2"))
    assert counter.all_answered()
    assert len(passed) == 2


def test_store_result() -> None:
    store = StoreResultCallback()
    assert store.get_response("s1") == (False, None)
    store(reply("x", 1))
    store(reply("y", 2))
    found, upcall = store.get_response("s1")
    assert found
    assert upcall is not None
    assert upcall.server_reply is not None
    assert upcall.server_reply.answer == "y"
    store(expire())  # an answered request is kept after expiry, as in Ganeti
    assert store.get_response("s1")[0]


def test_helpers_refuse_non_callables() -> None:
    with pytest.raises(ConfdClientError, match="callable"):
        FilterCallback(42)  # type: ignore[arg-type]


async def test_helpers_behind_a_real_client() -> None:
    store = StoreResultCallback()
    counter = CountingCallback(FilterCallback(store))
    key = b"k"
    async with (
        run_responders(3, key) as responders,
        open_confd_client(key, [r.address for r in responders], callback=counter) as client,
    ):
        request = ConfdRequest(RequestType.PING)
        counter.register_query(request.rsalt)
        await client.send_request(request, coverage=-1)
        await settle(counter.all_answered)
        found, upcall = store.get_response(request.rsalt)
        assert found
        assert upcall is not None
        assert upcall.salt == request.rsalt
