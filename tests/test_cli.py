"""The trioconfd command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

import trioconfd
from trioconfd import ConfdClientError
from trioconfd.cli._main import (
    EXIT_CLOSED_OUTPUT,
    EXIT_ERROR_REPLY,
    EXIT_OK,
    EXIT_OUTPUT_ERROR,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    UsageError,
    parse_arguments,
    parse_peer,
)
from trioconfd.cli._render import one_line
from trioconfd.testing import ConfdServer, free_udp_port, make_cluster_config, open_confd_server

from .conftest import write_key_file
from .responders import run_responders, silent

KEY = b"cli key\n"
CONFIG = make_cluster_config(
    nodes=4, master_candidates=3, instances=4, links=("br0", "br1"), serial=12, node_serial=5
)


async def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "trioconfd", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], check=False).returncode == 0


async def run_cli_without_a_network(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The command in a network namespace of its own, whose loopback is down.

    Every send fails with ENETUNREACH and no resolver is reachable, so
    nothing can leave the machine. CI must be able to make one (as root).
    """
    if not _can_unshare():
        if os.environ.get("CI"):
            pytest.fail("unshare -n is needed in CI (run as root)")
        pytest.skip("unshare -n is not permitted here")
    return await trio.run_process(
        ["unshare", "-n", sys.executable, "-m", "trioconfd", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_file(tmp_path, KEY)


@pytest.fixture
async def servers() -> AsyncIterator[list[ConfdServer]]:
    async with open_confd_server(CONFIG, KEY) as one, open_confd_server(CONFIG, KEY) as two:
        yield [one, two]


def peer_args(servers: Sequence[ConfdServer]) -> list[str]:
    args = []
    for server in servers:
        args += ["--peer", f"{server.address[0]}:{server.address[1]}"]
    return args


@pytest.mark.parametrize(
    ("command", "line", "daemon_said"),
    [
        (["node-role", "nosuchnode"], "node 'nosuchnode'", "ECodeNoEnt"),
        (["node-drbd", "nosuchnode"], "node 'nosuchnode'", "ECodeNoEnt"),
        (["node-instances", "nosuchnode"], "node 'nosuchnode'", "ECodeNoEnt"),
        (["instance-disks", "nosuch"], "instance 'nosuch'", "ECodeNoEnt"),
        (["node-pip-by-instance-ip", "10.9.9.9"], "no instance has IP 10.9.9.9", "UNKNOWN_ENTRY"),
        (
            ["node-pip-by-instance-ip", "10.9.9.9", "--link", "br9"],
            "no instance has IP 10.9.9.9 on link 'br9'",
            "UNKNOWN_ENTRY",
        ),
        (["config", "/no/such/path"], "nothing at /no/such/path in the configuration", "ARGUMENT"),
    ],
)
async def test_every_command_says_not_found_the_same_way_on_one_line(
    servers: list[ConfdServer], key_file: Path, command: list[str], line: str, daemon_said: str
) -> None:
    args = [*command, *peer_args(servers), "--key-file", str(key_file)]
    done = await run_cli(*args)
    assert done.returncode == EXIT_ERROR_REPLY
    assert done.stdout == b""
    errors = done.stderr.decode().splitlines()
    assert errors[0] == f"trioconfd: not found: {line}"
    assert len(errors) == 2, errors
    assert errors[1].startswith("serial 0, 2/2 replies"), errors
    as_json = await run_cli(*args, "--json")
    assert as_json.returncode == EXIT_ERROR_REPLY
    error = json.loads(as_json.stdout)["error"]
    assert error["not_found"] is True  # a path's ARGUMENT error too, as the line says
    assert daemon_said in error["message"]  # the daemon's own words


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "Failure: prerequisites not met for this operation:\n"
            "error type: ECodeInval, error details:\nBad name",
            "Bad name (ECodeInval)",
        ),
        (
            'OpPrereqError "Node name \\"x\\" not found" ECodeNoEnt',
            'Node name "x" not found (ECodeNoEnt)',
        ),
        (
            'Could not retrieve disks: OpPrereqError "Disk uuid 12 not found" ECodeNoEnt',
            "Disk uuid 12 not found (ECodeNoEnt)",
        ),
        ("two\nlines  and   spaces", "two lines and spaces"),
    ],
)
def test_the_daemons_error_texts_are_shown_on_one_line(text: str, line: str) -> None:
    assert one_line(text) == line


async def test_several_ips_not_found_each_say_so(
    servers: list[ConfdServer], key_file: Path
) -> None:
    done = await run_cli(
        "node-pip-by-instance-ip", "10.9.9.9", "10.9.9.8",
        *peer_args(servers), "--key-file", str(key_file),
    )  # fmt: skip
    assert done.returncode == EXIT_OK
    assert done.stdout.decode().splitlines() == ["10.9.9.9 not found", "10.9.9.8 not found"]


async def test_an_empty_list_says_nothing_matched(
    servers: list[ConfdServer], key_file: Path
) -> None:
    done = await run_cli(
        "instance-ips", "--link", "nosuchlink", *peer_args(servers), "--key-file", str(key_file)
    )
    assert done.returncode == EXIT_OK  # the daemons answered: an empty list
    assert done.stdout == b""  # not an empty line
    assert done.stderr.decode().splitlines()[0] == (
        "trioconfd: nothing matched: no instance has an IP on link 'nosuchlink' (or no such link)"
    )
    as_json = await run_cli(
        "instance-ips", "--link", "nosuchlink", "--json",
        *peer_args(servers), "--key-file", str(key_file),
    )  # fmt: skip
    assert json.loads(as_json.stdout)["answer"] == []


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["ping"], "3000000"),
        (["master"], "node1.example.com"),
        (["master", "--fields", "name,ip,mnode-pip"], "node1.example.com\n192.0.2.254\n192.0.2.1"),
        (["node-role", "node2"], "candidate (1)"),
        (["node-role", "node1.example.com"], "master (0)"),
        (["node-pips"], None),
        (["mc-pips"], None),
        (["instance-ips"], "198.18.0.1\n198.18.0.3"),
        (["instance-ips", "--link", "br1"], "198.18.0.2\n198.18.0.4"),
        (["node-pip-by-instance-ip", "198.18.0.3"], "192.0.2.3"),
        (["node-pip-by-instance-ip", "198.18.0.2", "--link", "br1"], "192.0.2.2"),
        (["node-drbd", "node1"], None),
        (["node-instances", "node1"], None),
        (["instance-disks", "instance1"], None),
        (["config", "/cluster/cluster_name"], "cluster.example.com"),
        (["data-collectors"], None),
    ],
)
async def test_query_subcommands(
    servers: list[ConfdServer], key_file: Path, command: list[str], expected: str | None
) -> None:
    done = await run_cli(*command, *peer_args(servers), "--key-file", str(key_file))
    assert done.returncode == EXIT_OK, done.stderr
    out = done.stdout.decode().strip()
    if expected is not None:
        assert out == expected
    assert "2/2 replies" in done.stderr.decode()
    assert "replies agree" in done.stderr.decode()


async def test_json_output_of_every_list_answer(servers: list[ConfdServer], key_file: Path) -> None:
    checks: list[tuple[list[str], Callable[[Any], bool]]] = [
        (["node-pips"], lambda a: sorted(a) == [f"192.0.2.{n}" for n in range(1, 5)]),
        (["mc-pips"], lambda a: sorted(a) == [f"192.0.2.{n}" for n in range(1, 4)]),
        (
            ["node-drbd", "node1"],
            lambda a: {row[2] for row in a} == {"instance1.example.com", "instance4.example.com"},
        ),
        (["node-instances", "node2"], lambda a: [len(a[0]), len(a[1])] == [1, 1]),
        (["instance-disks", "instance1"], lambda a: a[0]["dev_type"] == "drbd"),
        (["data-collectors"], lambda a: "diskstats" in a),
        (
            ["node-pip-by-instance-ip", "198.18.0.1", "203.0.113.1"],
            lambda a: a == [[0, "192.0.2.1", 12], [1, 0, 0]],
        ),
    ]
    for command, check in checks:
        done = await run_cli(*command, *peer_args(servers), "--key-file", str(key_file), "--json")
        assert done.returncode == EXIT_OK, done.stderr
        result = json.loads(done.stdout)
        assert check(result["answer"]), (command, result["answer"])
        assert result["status"] == "OK"
        assert (result["sent"], result["received"], result["needed"]) == (2, 2, 2)
        assert not result["timed_out"]
        assert len(result["replies"]) == 2


async def test_a_closed_standard_output_ends_the_command_quietly(
    servers: list[ConfdServer], key_file: Path
) -> None:
    # As `trioconfd master ... | head -c 0`: the reader is gone before anything is written.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = await trio.run_process(
            [
                sys.executable,
                "-m",
                "trioconfd",
                "master",
                *peer_args(servers),
                "--key-file",
                str(key_file),
            ],
            stdout=writer,
            capture_stderr=True,
            check=False,
        )
    finally:
        os.close(writer)
    assert done.returncode == EXIT_CLOSED_OUTPUT
    assert b"Traceback" not in done.stderr
    assert b"BrokenPipe" not in done.stderr


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
async def test_a_bad_timeout_is_explained_in_the_command_lines_terms(value: str) -> None:
    done = await run_cli("ping", "--peer", "127.0.0.1:1814", "--hmac-key", "k", "--timeout", value)
    assert done.returncode == EXIT_USAGE
    stderr = done.stderr.decode()
    assert "argument --timeout:" in stderr
    assert "math.inf" not in stderr
    assert "seconds" in stderr


async def test_error_reply_exit_code(servers: list[ConfdServer], key_file: Path) -> None:
    done = await run_cli(
        "node-role", "nosuchnode", *peer_args(servers), "--key-file", str(key_file)
    )
    assert done.returncode == EXIT_ERROR_REPLY
    assert "trioconfd: not found: node 'nosuchnode'" in done.stderr.decode()
    assert done.stdout == b""


async def test_timeout_exit_code(key_file: Path) -> None:
    async with run_responders(2, KEY, silent) as responders:
        peers = [f"--peer=127.0.0.1:{r.address[1]}" for r in responders]
        done = await run_cli("ping", *peers, "--key-file", str(key_file), "--timeout", "0.3")
    assert done.returncode == EXIT_TIMEOUT
    stderr = done.stderr.decode()
    assert "no quorum: 0/2 replies" in stderr
    assert "none of the 2 peers asked sent anything back" in stderr
    assert "a wrong key" in stderr
    assert "a clock over 300 s off" in stderr


async def test_without_a_quorum_nothing_goes_to_stdout_unless_partial(
    servers: list[ConfdServer], key_file: Path
) -> None:
    # One of three peers answers: 1 reply, 2 needed. A script reading
    # standard output must not take that one answer as the cluster's.
    async with run_responders(2, KEY, silent) as responders:
        peers = [*peer_args(servers[:1])]
        for responder in responders:
            peers += ["--peer", f"127.0.0.1:{responder.address[1]}"]
        args = ["master", *peers, "--key-file", str(key_file), "--timeout", "0.3"]
        plain = await run_cli(*args)
        partial = await run_cli(*args, "--partial")
        as_json = await run_cli(*args, "--json")
    assert (plain.returncode, plain.stdout) == (EXIT_TIMEOUT, b"")
    stderr = plain.stderr.decode()
    assert "no quorum: 1/3 replies in time, 2 needed" in stderr
    assert "untrusted without a quorum" in stderr
    assert "node1.example.com" in stderr  # what arrived, on standard error
    assert (partial.returncode, partial.stdout) == (EXIT_TIMEOUT, b"node1.example.com\n")
    assert "no quorum" in partial.stderr.decode()
    figures = json.loads(as_json.stdout)
    assert as_json.returncode == EXIT_TIMEOUT
    assert (figures["quorum"], figures["received"], figures["needed"]) == (False, 1, 2)


async def test_a_quorum_says_so_in_json(servers: list[ConfdServer], key_file: Path) -> None:
    done = await run_cli("master", *peer_args(servers), "--key-file", str(key_file), "--json")
    assert done.returncode == EXIT_OK
    assert json.loads(done.stdout)["quorum"] is True


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("missing", ["--key-file", "{dir}/nope"], "cannot read the HMAC key file"),
        ("empty", ["--key-file", "{dir}/empty"], "is empty"),
        ("", ["--peer", "not_an ip", "--hmac-key", "k"], "'not_an ip' is not an IP address or"),
        ("", ["--peer", "10.0.0.300", "--hmac-key", "k"], "'10.0.0.300' is not an IP address"),
        ("", ["--peer", "127.0.0.1:99999", "--hmac-key", "k"], "port must be"),
        ("", ["--peer", "::1", "--peer", "127.0.0.1", "--hmac-key", "k"], "mix IPv4 and IPv6"),
        ("", ["--peer", "127.0.0.1", "--hmac-key", ""], "--hmac-key is empty"),
        ("", ["--peer", "127.0.0.1", "--hmac-key", "k", "--coverage", "5"], "coverage 5"),
    ],
)
async def test_usage_errors_are_one_line(
    tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    (tmp_path / "empty").write_bytes(b"")
    done = await run_cli("ping", *[arg.format(dir=tmp_path) for arg in args])
    assert done.returncode == EXIT_USAGE
    stderr = done.stderr.decode().strip()
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("trioconfd: error:")
    assert message in stderr


@pytest.mark.parametrize(
    "command", [["watch", "ping"], ["bench", "--requests", "2", "--concurrency", "1"]]
)
@pytest.mark.parametrize(
    ("coverage", "message"),
    [
        ("5", "coverage 5 asks for more peers than the 1 known"),
        ("-5", "coverage must be -1, 0 or a peer count, not -5"),
    ],
)
async def test_a_mistake_refused_in_a_task_is_one_line_too(
    command: list[str], coverage: str, message: str
) -> None:
    # watch asks in a nursery, bench in its workers: what the API refuses
    # there comes out in an exception group, and is said all the same.
    done = await run_cli(
        *command, "--peer", "127.0.0.1:1", "--hmac-key", "k", "--coverage", coverage
    )
    assert done.returncode == EXIT_USAGE
    assert done.stderr.decode().splitlines() == [f"trioconfd: error: {message}"]


async def test_a_watch_of_a_request_too_big_to_send_is_a_usage_error() -> None:
    done = await run_cli(
        "watch", "config", "/" + "a" * 70000, "--peer", "127.0.0.1:1", "--hmac-key", "k"
    )
    assert done.returncode == EXIT_USAGE
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("trioconfd: error: the message is 70")
    assert "over the 65527-byte datagram limit" in line


async def test_numbers_and_names_the_command_line_refuses() -> None:
    huge = str(10**400)
    peer = ["--peer", "127.0.0.1:1"]
    for args, said in (
        (["bench", *peer, "--requests", huge], f"{huge[:37]}... is more than 1,000,000,000"),
        (["bench", *peer, "--concurrency", "65537"], "--concurrency: 65537 is more than 65,536"),
        (["ping", *peer, "--key-file", ""], "argument --key-file: the file name is empty"),
        (["serve", "--key-file", "", "x.json"], "argument --key-file: the file name is empty"),
    ):
        done = await run_cli(*args)
        assert done.returncode == EXIT_USAGE
        assert said in done.stderr.decode()


async def test_serve_names_its_bind_option_when_it_is_wrong(tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path, KEY)
    done = await run_cli("serve", "--key-file", str(key_file), "--bind", "127.0.0.1:0", "x.json")
    assert done.returncode == EXIT_USAGE
    assert done.stderr.decode().splitlines() == [
        "trioconfd: error: bad --bind '127.0.0.1:0': port must be an integer from 1 to 65535, not 0"
    ]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["ping", "--help"]])
async def test_help_that_cannot_be_written_is_status_74(args: list[str]) -> None:
    command = [sys.executable, "-m", "trioconfd", *args]
    done = await trio.run_process(
        ["sh", "-c", 'exec "$@" > /dev/full', "sh", *command], capture_stderr=True, check=False
    )
    assert done.returncode == EXIT_OUTPUT_ERROR
    assert done.stderr.decode().splitlines() == [
        "trioconfd: error: cannot write to standard output: No space left on device"
    ]
    done = await trio.run_process(
        ["bash", "-c", '"$@" | head -c 0; exit "${PIPESTATUS[0]}"', "bash", *command],
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == EXIT_CLOSED_OUTPUT
    assert done.stderr == b""


async def test_argparse_errors_use_the_usage_code() -> None:
    done = await run_cli("master", "--fields", "name,bogus", "--hmac-key", "k")
    assert done.returncode == EXIT_USAGE
    assert "unknown field(s) bogus" in done.stderr.decode()
    done = await run_cli("frobnicate")
    assert done.returncode == EXIT_USAGE


async def test_defaults_come_from_the_ganeti_node(
    servers: list[ConfdServer], tmp_path: Path
) -> None:
    data = tmp_path / "var/lib/ganeti"
    data.mkdir(parents=True)
    write_key_file(data, KEY)
    (data / "ssconf_master_candidates_ips").write_text("127.0.0.1\n")
    port = str(servers[0].address[1])
    done = await run_cli("master", "--port", port, env={"GANETI_ROOTDIR": str(tmp_path)})
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.decode().strip() == "node1.example.com"


def test_parse_peer() -> None:
    assert parse_peer("192.0.2.1") == "192.0.2.1"
    assert parse_peer("192.0.2.1:1815") == ("192.0.2.1", 1815)
    assert parse_peer("::1") == "::1"
    assert parse_peer("[::1]:1815") == ("::1", 1815)
    assert parse_peer("[::1]") == "::1"
    assert parse_peer("node1.example.com:1815") == ("node1.example.com", 1815)
    assert parse_peer("localhost") == "localhost"
    with pytest.raises(UsageError, match=r"bad peer '\[::1': the '\[' is never closed"):
        parse_peer("[::1")
    for bad in ("[::1]x", "192.0.2.1:http", "host:", "[::1]:0", "[node1]:1814", "a b:1814", "[::1"):
        with pytest.raises(UsageError, match="bad peer"):
            parse_peer(bad)
        with pytest.raises(ConfdClientError, match="bad peer"):
            trioconfd.parse_peer_text(bad)  # the library's own, for programs


@asynccontextmanager
async def serving(
    config_path: Path, key_file: Path, *where: str
) -> AsyncIterator[tuple[LineReader, LineReader]]:
    """``trioconfd serve`` on ``config_path`` (``where``: --port or --bind): its output and
    its problems, line by line."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "trioconfd",
            "serve",
            str(config_path),
            "--key-file",
            str(key_file),
            *where,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        yield LineReader(process.stdout), LineReader(process.stderr)
    finally:
        process.terminate()
        await process.wait()


async def test_serve_reloads_its_file(tmp_path: Path, key_file: Path) -> None:
    config_path = tmp_path / "config.data"
    config_path.write_text(json.dumps(CONFIG))
    port = free_udp_port()
    async with serving(config_path, key_file, "--port", str(port)) as (lines, problems):
        assert "(serial 12)" in await lines.next()
        peer = ["--peer", f"127.0.0.1:{port}", "--key-file", str(key_file)]
        done = await run_cli("master", *peer)
        assert done.stdout.decode().strip() == "node1.example.com"
        newer = make_cluster_config(nodes=4, master_candidates=3, instances=4, serial=13, master=3)
        config_path.with_suffix(".new").write_text(json.dumps(newer))
        config_path.with_suffix(".new").replace(config_path)
        assert "serial 13" in await lines.next()
        done = await run_cli("master", *peer, "--json")
        result = json.loads(done.stdout)
        assert (result["answer"], result["serial"]) == ("node3.example.com", 13)
        # Problems go to standard error, once each.
        config_path.write_text("{broken")
        assert "not reloaded, still serving serial 13" in await problems.next()
        # JSON of the wrong shape: reported, not a crash.
        for wrong in (
            {**newer, "nodes": 5},
            {**newer, "cluster": {**newer["cluster"], "master_node": []}},
        ):
            config_path.write_text(json.dumps(wrong))
            assert "not reloaded, still serving serial 13" in await problems.next()
        config_path.write_text("[" * 100_000 + "]" * 100_000)
        assert "nests too deeply" in await problems.next()
        assert "serial 13" in (await run_cli("master", *peer)).stderr.decode()
        config_path.unlink()
        assert "is gone (deleted or renamed): still serving serial 13" in await problems.next()
        await trio.sleep(1.2)  # two more looks at the file: nothing more to say
        config_path.write_text(json.dumps(CONFIG))  # back, at serial 12
        assert "reloaded" in await lines.next()
        assert "serial 12" in (await run_cli("master", *peer)).stderr.decode()
        with trio.move_on_after(0.5):
            said_again = await problems.next()
            raise AssertionError(f"a problem reported twice: {said_again}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"cluster": {"serial_no": 1}, "nodes": 5}', "'nodes' is not an object of objects"),
        ("[" * 100_000 + "]" * 100_000, "nests too deeply to read"),
    ],
)
async def test_serve_refuses_a_file_of_the_wrong_shape_in_one_line(
    tmp_path: Path, key_file: Path, text: str, message: str
) -> None:
    config_path = tmp_path / "config.data"
    config_path.write_text(text)
    port = str(free_udp_port())
    done = await run_cli("serve", str(config_path), "--key-file", str(key_file), "--port", port)
    assert done.returncode == EXIT_USAGE
    errors = done.stderr.decode().splitlines()
    assert len(errors) == 1, errors
    assert message in errors[0]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_serve_says_where_it_listens_as_a_peer_is_written(
    tmp_path: Path, key_file: Path
) -> None:
    config_path = tmp_path / "config.data"
    config_path.write_text(json.dumps(CONFIG))
    port = free_udp_port("::1")
    async with serving(config_path, key_file, "--bind", f"[::1]:{port}") as (lines, _):
        assert f"on [::1]:{port}; Ctrl-C stops" in await lines.next()


class LineReader:
    """Lines from a process's output, each awaited with a deadline."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        with trio.fail_after(20):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some()
                if not chunk:
                    raise EOFError("the process closed its output")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


async def test_watch_prints_the_answer_then_each_change_until_ctrl_c(
    servers: list[ConfdServer], key_file: Path
) -> None:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "trioconfd",
            "watch",
            "master",
            *peer_args(servers),
            "--key-file",
            str(key_file),
            "--interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        lines = LineReader(process.stdout)
        first = await lines.next()
        assert first.endswith(" serial 12: node1.example.com"), first
        newer = make_cluster_config(nodes=4, master_candidates=3, instances=4, serial=13, master=3)
        for server in servers:
            server.set_config(newer)
        second = await lines.next()
        assert second.endswith(" serial 13: node3.example.com"), second
        # The time: an ISO 8601 timestamp with its offset, to the second.
        assert datetime.fromisoformat(second.split(" ")[0]).tzinfo is not None
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await process.wait() == 130
        problems = await process.stderr.receive_some()
        assert b"Traceback" not in problems
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_watch_refuses_a_bad_interval(key_file: Path) -> None:
    for bad in ("0", "-1", "inf", "nan", "soon"):
        done = await run_cli(
            "watch", "ping", "--peer", "127.0.0.1:1", "--hmac-key", "k", "--interval", bad
        )
        assert done.returncode == EXIT_USAGE
        # One message for every refusal, the one rule it breaks.
        assert (
            f"argument --interval: {bad} is not a number of seconds above 0, finite"
            in done.stderr.decode()
        )


async def test_bench(servers: list[ConfdServer], key_file: Path) -> None:
    done = await run_cli(
        "bench",
        *peer_args(servers),
        "--key-file",
        str(key_file),
        "--requests",
        "60",
        "--concurrency",
        "8",
        "--json",
    )
    assert done.returncode == EXIT_OK, done.stderr
    figures = json.loads(done.stdout)
    assert set(figures) == {"sequential", "8 in flight"}
    for phase in figures.values():
        assert (phase["queries"], phase["timeouts"]) == (60, 0)
        assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    done = await run_cli(
        "bench", *peer_args(servers), "--key-file", str(key_file), "--requests", "0"
    )
    assert done.returncode == EXIT_USAGE


async def test_demo_runs_and_shows_the_stale_server_outvoted() -> None:
    done = await run_cli("demo")
    assert done.returncode == EXIT_OK, done.stderr
    out = done.stdout.decode()
    assert "<- stale, outranked" in out
    assert "trusted: node2.example.com (serial 42, the highest)" in out
    assert "timed_out=True, replies 0/3" in out


async def test_help_and_version() -> None:
    done = await run_cli("--help")
    assert done.returncode == EXIT_OK
    for command in ("ping", "master", "node-pip-by-instance-ip", "serve", "bench", "demo"):
        assert command in done.stdout.decode()
    done = await run_cli("--version")
    assert done.stdout.decode().startswith("trioconfd ")


async def test_source_is_where_requests_come_from(key_file: Path) -> None:
    async with run_responders(2, KEY) as responders:
        peers = [f"--peer=127.0.0.1:{r.address[1]}" for r in responders]
        done = await run_cli("ping", *peers, "--key-file", str(key_file), "--source", "127.0.0.11")
        assert done.returncode == EXIT_OK, done.stderr
        bench = await run_cli(
            "bench",
            *peers,
            "--key-file",
            str(key_file),
            "--source",
            "127.0.0.12",
            "--requests",
            "5",
            "--concurrency",
            "2",
        )
        assert bench.returncode == EXIT_OK, bench.stderr
    sources = {address[0] for r in responders for address in r.client_addresses}
    assert sources == {"127.0.0.11", "127.0.0.12"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nonsense", "--source 'nonsense' is not an IP address"),
        ("::1", "--source '::1' is IPv6, but the peers are IPv4"),
        ("192.0.2.1", "cannot bind the client's socket to 192.0.2.1 port 0"),
    ],
)
async def test_bad_source_is_a_usage_error(key_file: Path, source: str, message: str) -> None:
    for command in ("ping", "bench"):
        done = await run_cli(
            command, "--peer", "127.0.0.1", "--key-file", str(key_file), "--source", source
        )
        assert done.returncode == EXIT_USAGE
        assert message in done.stderr.decode()
        assert "Traceback" not in done.stderr.decode()


async def test_answers_holding_lone_surrogates_are_printed_escaped(key_file: Path) -> None:
    """A lone surrogate (a JSON escape in the configuration) cannot be written as UTF-8."""
    config = json.loads(json.dumps(CONFIG))
    config["cluster"]["cluster_name"] = "odd\udcffname"
    async with open_confd_server(config, KEY) as server:
        peer = f"--peer={server.address[0]}:{server.address[1]}"
        done = await run_cli("config", "/cluster/cluster_name", peer, "--key-file", str(key_file))
    assert "Traceback" not in done.stderr.decode()
    assert done.returncode == EXIT_OK
    assert done.stdout == b"odd\\udcffname\n"


async def test_without_a_quorum_an_error_reply_is_never_an_answer(
    servers: list[ConfdServer], key_file: Path
) -> None:
    # One server of two up (and the other port silent): no quorum. What did
    # arrive is an error, which --partial must not print as an answer.
    quiet = free_udp_port()
    peers = [*peer_args(servers[:1]), "--peer", f"127.0.0.1:{quiet}"]
    for command, remark in (
        (["node-pip-by-instance-ip", "10.9.9.9"], "not found: no instance has IP 10.9.9.9"),
        (["config", "/nosuch"], "not found: nothing at /nosuch in the configuration"),
        (["node-role", "nosuch"], "not found: node 'nosuch'"),
        (["instance-ips", "--link", "nosuchlink"], "nothing matched: no instance has an IP"),
    ):
        for partial in ([], ["--partial"]):
            done = await run_cli(
                *command, *peers, "--key-file", str(key_file), "--timeout", "0.3", *partial
            )
            assert done.returncode == EXIT_TIMEOUT
            assert done.stdout == b"", (command, partial, done.stdout)
            assert f"trioconfd: {remark}" in done.stderr.decode(), done.stderr.decode()
    done = await run_cli(
        "master", *peers, "--key-file", str(key_file), "--timeout", "0.3", "--partial"
    )
    assert done.stdout.decode() == "node1.example.com\n"  # an answer, asked for


async def _first_line_of_watch(*args: str, stream: str = "stdout") -> str:
    """The first line ``trioconfd watch ARGS`` writes to ``stream``; then it is stopped."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioconfd", "watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    output = process.stdout if stream == "stdout" else process.stderr
    assert output is not None
    try:
        return await LineReader(output).next()
    finally:
        process.kill()
        await process.wait()


async def test_watch_says_not_found_in_one_line_and_when_no_quorum_answers(
    servers: list[ConfdServer], key_file: Path
) -> None:
    key = ["--key-file", str(key_file), "--interval", "0.1"]
    first = await _first_line_of_watch("node-role", "nosuchnode", *peer_args(servers), *key)
    assert first.endswith(" serial 0: not found: node 'nosuchnode'"), first
    # No quorum at all (one peer, silent): standard error says so.
    quiet = ["--peer", f"127.0.0.1:{free_udp_port()}", "--timeout", "0.2"]
    said = await _first_line_of_watch("master", *quiet, *key, stream="stderr")
    assert said.startswith("trioconfd: no quorum: timed out: 0 of 1 peers replied"), said


@pytest.mark.parametrize("command", [["master"], ["watch", "master", "--interval", "0.1"]])
async def test_output_that_cannot_be_written_is_one_line_and_status_74(
    servers: list[ConfdServer], key_file: Path, command: list[str]
) -> None:
    args = [*command, *peer_args(servers), "--key-file", str(key_file)]
    for redirect, said in (
        ("> /dev/full", "cannot write to standard output: No space left on device"),
        (">&-", "standard output is closed"),
    ):
        done = await trio.run_process(
            ["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", "trioconfd", *args],
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == EXIT_OUTPUT_ERROR
        assert done.stderr.decode().splitlines() == [f"trioconfd: error: {said}"]


async def test_watch_on_a_pipe_closed_early_ends_quietly(
    servers: list[ConfdServer], key_file: Path
) -> None:
    command = [sys.executable, "-m", "trioconfd", "watch", "master", *peer_args(servers)]
    command += ["--key-file", str(key_file), "--interval", "0.1"]
    done = await trio.run_process(
        ["bash", "-c", '"$@" | head -c 0; exit "${PIPESTATUS[0]}"', "bash", *command],
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == EXIT_CLOSED_OUTPUT, done.stderr
    assert done.stderr == b""


async def test_with_standard_error_closed_nothing_strays_onto_standard_output(
    key_file: Path,
) -> None:
    quiet = f"127.0.0.1:{free_udp_port()}"
    command = [sys.executable, "-m", "trioconfd", "master", "--peer", quiet]
    command += ["--key-file", str(key_file), "--timeout", "0.2", "--partial"]
    done = await trio.run_process(
        ["sh", "-c", 'exec "$@" 2>&-', "sh", *command], capture_stdout=True, check=False
    )
    assert done.returncode == EXIT_TIMEOUT
    assert done.stdout == b""


@pytest.mark.parametrize(
    ("argv", "usage", "own_option"),
    [
        (["watch", "master", "--bogus"], "usage: trioconfd watch master ", "--interval"),
        (["watch", "--bogus", "master"], "usage: trioconfd watch master ", "--interval"),
        (["master", "--bogus"], "usage: trioconfd master ", "--fields"),
    ],
)
def test_an_unknown_option_shows_the_innermost_subcommands_usage(
    argv: list[str], usage: str, own_option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_arguments(argv)
    assert exited.value.code == EXIT_USAGE
    stderr = capsys.readouterr().err
    assert stderr.startswith(usage)
    assert own_option in stderr  # the query's options, not watch's list of queries
    assert stderr.endswith(f"{usage[7:].strip()}: error: unrecognized arguments: --bogus\n")
