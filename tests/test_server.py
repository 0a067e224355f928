"""The in-process server on its own (its parity with the daemon is in test_server_parity)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import trio

from trioconfd import (
    MAGIC,
    ConfdError,
    ConfdReply,
    ConfdRequest,
    HmacKey,
    NodeRole,
    ReplyStatus,
    RequestType,
    RetryPolicy,
    open_confd_client,
    pack_request,
    requests,
    unpack_reply,
)
from trioconfd.testing import ConfigAnswers, make_cluster_config, open_confd_server
from trioconfd.testing._haskell import haskell_show

KEY = b"server key"


async def test_client_queries_the_server_and_sees_a_live_swap(tmp_path: Path) -> None:
    config = make_cluster_config(nodes=3, instances=2, serial=5)
    path = tmp_path / "config.data"
    path.write_text(json.dumps(config))
    async with (
        open_confd_server(path, KEY) as one,
        open_confd_server(config, KEY) as two,
        open_confd_client(KEY, [one.address, two.address]) as client,
    ):
        result = await client.query(requests.cluster_master())
        assert (result.answer, result.serial, result.received) == ("node1.example.com", 5, 2)
        newer = make_cluster_config(nodes=3, instances=2, serial=6, master=3)
        one.set_config(newer)
        two.set_config(newer)
        result = await client.query(requests.cluster_master())
        assert (result.answer, result.serial) == ("node3.example.com", 6)
        role = await client.query(requests.node_role("node3.example.com"))
        assert role.answer == NodeRole.MASTER
        assert one.stats.answered == two.stats.answered == 3


async def test_server_drops_what_the_daemon_drops() -> None:
    async with open_confd_server(make_cluster_config(), KEY) as server:
        good = pack_request(ConfdRequest(RequestType.PING), KEY)
        assert server.reply_to(good) is not None
        assert server.reply_to(pack_request(ConfdRequest(RequestType.PING), b"other")) is None
        assert server.reply_to(b"junk") is None
        stale = pack_request(ConfdRequest(RequestType.PING), KEY, now=time.time() - 301)
        assert server.reply_to(stale) is None
        assert (server.stats.answered, server.stats.dropped) == (0, 3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the configuration"),
        (b"{not json", "is not JSON"),
        (b'{"nodes": {}}', "not a Ganeti configuration"),
        (b"[1, 2]", "not a Ganeti configuration"),
    ],
)
async def test_bad_configurations_are_refused(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "config.data"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfdError, match=message):
        async with open_confd_server(path, KEY):
            pass
    async with open_confd_server(make_cluster_config(), KEY) as server:
        with pytest.raises(ConfdError, match=message):
            server.set_config(path)
        assert server.serial == 1  # the old configuration is still served


async def test_a_configuration_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    # Read in the event loop, a FIFO nobody writes to blocked it for good
    # (trioconfd serve hung, and Ctrl-C could not stop it).
    fifo = tmp_path / "config.data"
    os.mkfifo(fifo)

    def unblock_a_regression() -> None:
        # Were it read again, its reader would wait for a writer for good (the
        # event loop with it: no Trio timeout fires). One comes after 5 s, so
        # that such a regression fails this test instead of hanging the suite.
        time.sleep(5)
        for _ in range(2):
            with contextlib.suppress(OSError):
                descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.write(descriptor, b"{}")
                os.close(descriptor)

    threading.Thread(target=unblock_a_regression, daemon=True).start()
    with trio.fail_after(5):
        with pytest.raises(ConfdError, match="not a regular file"):
            async with open_confd_server(fifo, KEY):
                pass
        async with open_confd_server(make_cluster_config(), KEY) as server:
            with pytest.raises(ConfdError, match="not a regular file"):
                server.set_config(fifo)
            assert server.serial == 1


async def test_bind_failure_is_a_clear_error() -> None:
    async with open_confd_server(make_cluster_config(), KEY) as server:
        with pytest.raises(ConfdError, match="cannot bind"):
            async with open_confd_server(make_cluster_config(), KEY, port=server.address[1]):
                pass


def test_answers_without_a_socket() -> None:
    answers = ConfigAnswers(make_cluster_config(nodes=2, instances=1, serial=8))
    reply = answers.answer(ConfdRequest(RequestType.NODE_ROLE_BYNAME, "node2"))
    assert (reply.status, reply.answer, reply.serial) == (ReplyStatus.OK, NodeRole.CANDIDATE, 8)
    reply = answers.answer(ConfdRequest(RequestType.NODE_DRBD, None))
    assert (reply.status, reply.answer) == (ReplyStatus.ERROR, "Invalid query type EmptyQuery")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain", '"plain"'),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        ("tab\there\n", '"tab\\there\\n"'),
        ("\x0eH", '"\\SO\\&H"'),
        ("\x01\x7f", '"\\SOH\\DEL"'),
        ("\u00e91", '"\\233\\&1"'),
        ("\u4e2dx", '"\\20013x"'),
    ],
)
def test_haskell_show(text: str, shown: str) -> None:
    assert haskell_show(text) == shown


# -- no datagram stops the server ------------------------------------------------


def _signed_request(msg: str, key: bytes = KEY) -> bytes:
    salt = str(int(time.time()))
    signature = HmacKey(key).sign((salt + msg).encode("utf-8", "surrogatepass"))
    return MAGIC + json.dumps({"hmac": signature, "msg": msg, "salt": salt}).encode()


@pytest.mark.parametrize("rsalt", ["\\udfff", "\\ud800x", "\\udc00\\ud800", "\\ud83d\\ude00"])
async def test_surrogates_in_the_rsalt_are_answered(rsalt: str) -> None:
    """The daemon answers these; packing the reply used to kill the server."""
    msg = '{"protocol":1,"type":0,"query":null,"rsalt":"%s"}' % rsalt  # noqa: UP031
    async with open_confd_server(make_cluster_config(), KEY) as server:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.sendto(_signed_request(msg), server.address)
            with trio.fail_after(5):
                datagram, _ = await sock.recvfrom(65536)
            reply, salt = unpack_reply(datagram, KEY)
            assert salt == json.loads('"%s"' % rsalt)  # noqa: UP031
            assert reply.answer == 3000000
            # The server is still there.
            await sock.sendto(_signed_request(msg), server.address)
            with trio.fail_after(5):
                await sock.recvfrom(65536)
        assert (server.stats.answered, server.stats.errors) == (2, 0)


async def test_a_client_rsalt_with_a_lone_surrogate_round_trips() -> None:
    async with (
        open_confd_server(make_cluster_config(serial=4), KEY) as server,
        open_confd_client(KEY, [server.address]) as client,
    ):
        result = await client.query(ConfdRequest(RequestType.CLUSTER_MASTER, rsalt="\udfff"))
        assert (result.ok, result.serial) == (True, 4)


async def test_a_datagram_that_finds_a_bug_does_not_stop_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        open_confd_server(make_cluster_config(), KEY) as server,
        open_confd_client(KEY, [server.address], retry=RetryPolicy.off()) as client,
    ):
        answer = server._answers.answer
        calls = 0

        def buggy_once(request: ConfdRequest) -> ConfdReply:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise KeyError("a bug")
            return answer(request)

        monkeypatch.setattr(server._answers, "answer", buggy_once)
        assert (await client.query(RequestType.PING, timeout=0.3)).timed_out
        assert (await client.query(RequestType.PING, timeout=5)).ok
        assert server.stats.errors == 1
    assert "answering a datagram from" in caplog.text
    assert "KeyError: 'a bug'" in caplog.text


def test_a_str_key_that_is_not_unicode_is_refused() -> None:
    with pytest.raises(ConfdError, match="not valid Unicode"):
        HmacKey("\udfff")


async def test_the_server_sends_replies_up_to_the_largest_ipv4_udp_payload() -> None:
    config = make_cluster_config(serial=4)
    async with open_confd_server(config, KEY) as server:
        for padding in (62_000, 65_300):  # replies of about 62,170 and 65,470 bytes
            config["cluster"]["tags"] = ["x" * padding]
            server.set_config(config)
            async with open_confd_client(KEY, [server.address]) as client:
                result = await client.query(RequestType.CONFIG_QUERY, "/cluster/tags", timeout=5)
            assert result.answer == ["x" * padding]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("serve_confd", "open_confd_server"),
        ("serve_cluster", "open_confd_cluster"),
        ("fault_proxy", "open_fault_proxy"),
        ("simulated_cluster", "open_simulated_cluster"),
        ("run_ganeti_confd", "open_ganeti_confd"),
    ],
)
def test_the_old_names_still_work_for_a_release_and_say_so(old: str, new: str) -> None:
    import trioconfd.testing

    with pytest.warns(DeprecationWarning, match=f"testing.{old} is deprecated: use .*{new}"):
        assert getattr(trioconfd.testing, old) is getattr(trioconfd.testing, new)
    with pytest.raises(AttributeError, match="no_such_name"):
        trioconfd.testing.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("trioconfd", "pack_reply", "trioconfd.protocol.pack_reply"),
        ("trioconfd", "unpack_request", "trioconfd.protocol.unpack_request"),
        ("trioconfd", "parse_peer", "trioconfd.parse_peer_text"),
        ("trioconfd", "ConfdMagicError", "trioconfd.ConfdMalformedError"),
        ("trioconfd.protocol", "ConfdMagicError", "trioconfd.protocol.ConfdMalformedError"),
    ],
)
def test_moved_names_still_work_for_a_release_and_say_where_they_went(
    module: str, old: str, new: str
) -> None:
    import importlib

    namespace = importlib.import_module(module)
    new_module, _, new_name = new.rpartition(".")
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: use .*{new_name}"):
        value = getattr(namespace, old)
    assert value is getattr(importlib.import_module(new_module), new_name)
    assert old not in namespace.__all__
    with pytest.raises(AttributeError, match="nothing_here"):
        namespace.nothing_here  # noqa: B018
