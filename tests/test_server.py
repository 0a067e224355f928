"""The in-process server on its own (its parity with the daemon is in test_server_parity)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from trioconfd import (
    ConfdError,
    ConfdRequest,
    NodeRole,
    ReplyStatus,
    RequestType,
    open_confd_client,
    pack_request,
    requests,
)
from trioconfd.testing import ConfigAnswers, make_cluster_config, serve_confd
from trioconfd.testing._answers import haskell_show

KEY = b"server key"


async def test_client_queries_the_server_and_sees_a_live_swap(tmp_path: Path) -> None:
    config = make_cluster_config(nodes=3, instances=2, serial=5)
    path = tmp_path / "config.data"
    path.write_text(json.dumps(config))
    async with (
        serve_confd(path, KEY) as one,
        serve_confd(config, KEY) as two,
        open_confd_client(KEY, [one.address, two.address]) as client,
    ):
        result = await client.query(requests.cluster_master())
        assert (result.answer, result.serial, result.received) == ("node1.example.com", 5, 2)
        newer = make_cluster_config(nodes=3, instances=2, serial=6)
        newer["cluster"]["master_node"] = list(newer["nodes"])[2]
        one.set_config(newer)
        two.set_config(newer)
        result = await client.query(requests.cluster_master())
        assert (result.answer, result.serial) == ("node3.example.com", 6)
        role = await client.query(requests.node_role("node3.example.com"))
        assert role.answer == NodeRole.MASTER
        assert one.stats.answered == two.stats.answered == 3


async def test_server_drops_what_the_daemon_drops() -> None:
    async with serve_confd(make_cluster_config(), KEY) as server:
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
        async with serve_confd(path, KEY):
            pass
    async with serve_confd(make_cluster_config(), KEY) as server:
        with pytest.raises(ConfdError, match=message):
            server.set_config(path)
        assert server.serial == 1  # the old configuration is still served


async def test_bind_failure_is_a_clear_error() -> None:
    async with serve_confd(make_cluster_config(), KEY) as server:
        with pytest.raises(ConfdError, match="cannot bind"):
            async with serve_confd(make_cluster_config(), KEY, port=server.address[1]):
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
