"""Defaults read from a Ganeti node's own files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from trioconfd import (
    ConfdClientError,
    InsecureKeyFileWarning,
    RequestType,
    ganeti_data_dir,
    open_confd_client,
    read_hmac_key,
    read_master_candidate_ips,
)
from trioconfd.client._node import MOST_NODE_FILE_BYTES, node_hmac_key

from .responders import answer_ping, run_responders

KEY = b"node key\n"


def make_node(root: Path, key: bytes | None, ips: str | None) -> Path:
    data = root / "var/lib/ganeti"
    data.mkdir(parents=True)
    if key is not None:
        (data / "hmac.key").write_bytes(key)
        (data / "hmac.key").chmod(0o600)
    if ips is not None:
        (data / "ssconf_master_candidates_ips").write_text(ips)
    return data


def test_data_dir_follows_ganeti_rootdir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GANETI_ROOTDIR", raising=False)
    assert ganeti_data_dir() == Path("/var/lib/ganeti")
    monkeypatch.setenv("GANETI_ROOTDIR", "/srv/node1/")
    assert ganeti_data_dir() == Path("/srv/node1/var/lib/ganeti")
    assert ganeti_data_dir("/x") == Path("/x/var/lib/ganeti")


def test_reads_key_bytes_exactly_and_ips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_node(tmp_path, KEY, "192.0.2.1\n\n 192.0.2.2 \n192.0.2.3")
    monkeypatch.setenv("GANETI_ROOTDIR", str(tmp_path))
    assert read_hmac_key() == KEY  # the trailing newline is part of the key
    assert read_master_candidate_ips() == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


def test_missing_empty_and_insecure_files(tmp_path: Path) -> None:
    data = make_node(tmp_path, None, "")
    with pytest.raises(ConfdClientError, match=r"cannot read the HMAC key file .*hmac.key"):
        read_hmac_key(data / "hmac.key")
    (data / "hmac.key").write_bytes(b"")
    with pytest.raises(ConfdClientError, match="is empty"):
        read_hmac_key(data / "hmac.key")
    (data / "hmac.key").write_bytes(b"s3cret")
    (data / "hmac.key").chmod(0o644)
    with pytest.warns(InsecureKeyFileWarning, match="mode 644") as caught:
        assert read_hmac_key(data / "hmac.key") == b"s3cret"
    assert "s3cret" not in str(caught[0].message)
    with pytest.raises(ConfdClientError, match="lists no addresses"):
        read_master_candidate_ips(data / "ssconf_master_candidates_ips")
    with pytest.raises(ConfdClientError, match="cannot read the master candidates file"):
        read_master_candidate_ips(tmp_path / "nope")


def test_node_files_that_are_no_such_thing_are_named(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfdClientError, match=f"the HMAC key file {fifo} is empty"):
        read_hmac_key(fifo)  # at once: no writer is waited for
    with pytest.raises(ConfdClientError, match=r"master candidates file .* lists no addresses"):
        read_master_candidate_ips(fifo)
    with pytest.raises(ConfdClientError, match=r"master candidates file .*: Is a directory"):
        read_master_candidate_ips(tmp_path)
    huge = tmp_path / "huge"
    huge.write_bytes(b"k" * (MOST_NODE_FILE_BYTES + 1))
    huge.chmod(0o600)
    with pytest.raises(ConfdClientError, match="is over 1,048,576 bytes: too long to be one"):
        read_hmac_key(huge)
    (tmp_path / "just").write_bytes(b"k" * MOST_NODE_FILE_BYTES)
    (tmp_path / "just").chmod(0o600)
    assert len(read_hmac_key(tmp_path / "just")) == MOST_NODE_FILE_BYTES
    for read in (read_hmac_key, read_master_candidate_ips):
        with pytest.raises(ConfdClientError, match="file's name is empty"):
            read("")


async def test_client_defaults_come_from_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_responders(3, KEY, answer_ping(serial=5)) as responders:
        # ssconf lists addresses only; these peers share one port.
        ports = {r.address[1] for r in responders}
        assert len(ports) == 3
        port = responders[0].address[1]
        make_node(tmp_path, KEY, "127.0.0.1\n")
        monkeypatch.setenv("GANETI_ROOTDIR", str(tmp_path))
        async with open_confd_client(port=port) as client:
            assert client.peers == (("127.0.0.1", port),)
            result = await client.query(RequestType.PING)
            assert (result.serial, result.received) == (5, 1)


async def test_client_reports_a_missing_node_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANETI_ROOTDIR", str(tmp_path))
    with pytest.raises(ConfdClientError, match="HMAC key file"):
        async with open_confd_client(peers=["127.0.0.1"]):
            pass


async def test_a_node_key_file_that_blocks_holds_up_only_the_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A FIFO at the key's path whose writer writes nothing: the read waits in
    # Trio for it to be readable, the loop runs on, and a cancel scope ends it.
    data = make_node(tmp_path, None, "127.0.0.1\n")
    os.mkfifo(data / "hmac.key", 0o600)
    writer = os.open(data / "hmac.key", os.O_RDWR)  # a writer, silent
    closed = False

    def close_writer() -> None:  # the read then ends (at the end of the file)
        nonlocal closed
        if not closed:
            closed = True
            os.close(writer)

    # Were the file read in the loop, the test would fail, not hang: 2 s on,
    # the writer is closed.
    unblock = threading.Timer(2.0, close_writer)
    unblock.start()
    monkeypatch.setenv("GANETI_ROOTDIR", str(tmp_path))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            with trio.move_on_after(0.3) as waited:
                async with open_confd_client():
                    pass
            nursery.cancel_scope.cancel()
        assert waited.cancelled_caught  # the open was ended by its cancel scope ...
        assert ticks >= 5  # ... and the loop ran meanwhile
    finally:
        unblock.cancel()
        unblock.join()
        close_writer()
    assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0


async def test_reading_the_node_files_holds_no_thread_and_no_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # Forty opens given up on a FIFO whose writer says nothing hold none of
    # Trio's forty worker threads (a thread blocked on it would, for good);
    # and a regular file is read with no wait, so a timeout around the open
    # does not fire under an autojumping clock (a wait on a thread would let
    # the clock jump past it).
    data = make_node(tmp_path, None, "127.0.0.1\n")
    os.mkfifo(data / "hmac.key", 0o600)
    writer = os.open(data / "hmac.key", os.O_RDWR)  # a writer, silent
    monkeypatch.setenv("GANETI_ROOTDIR", str(tmp_path))
    try:
        for _ in range(40):
            with trio.move_on_after(1):
                async with open_confd_client():
                    pass
    finally:
        os.close(writer)
    assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
    (data / "hmac.key").unlink()
    (data / "hmac.key").write_bytes(KEY)
    (data / "hmac.key").chmod(0o600)
    before = trio.current_time()
    with trio.fail_after(3600):
        async with open_confd_client(port=1) as client:
            assert client.peers == (("127.0.0.1", 1),)
    assert trio.current_time() == before


async def test_a_node_key_given_a_byte_at_a_time_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_node(tmp_path, None, "127.0.0.1\n")
    os.mkfifo(data / "hmac.key", 0o600)
    writer = os.open(data / "hmac.key", os.O_RDWR)
    monkeypatch.setenv("GANETI_ROOTDIR", str(tmp_path))
    key = KEY * 200

    async def trickle() -> None:
        for byte in key:
            os.write(writer, bytes([byte]))
            await trio.lowlevel.checkpoint()
        os.close(writer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        assert await node_hmac_key() == key


async def test_an_insecure_node_key_is_said_of_the_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_node(tmp_path, KEY, "127.0.0.1\n")
    (data / "hmac.key").chmod(0o644)
    monkeypatch.setenv("GANETI_ROOTDIR", str(tmp_path))
    with pytest.warns(InsecureKeyFileWarning, match="mode 644") as caught:
        async with open_confd_client(port=1):
            pass
    # Filters by module see trioconfd's line, not Trio's nor the reader's.
    assert Path(caught[0].filename).match("trioconfd/client/_open.py")


def test_a_key_may_come_through_a_pipe(tmp_path: Path) -> None:
    # As from --key-file <(command) or /dev/stdin: not in the process list.
    readable, writable = os.pipe()
    try:
        os.write(writable, KEY)
        os.close(writable)
        assert read_hmac_key(f"/dev/fd/{readable}") == KEY
    finally:
        os.close(readable)
