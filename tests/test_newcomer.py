"""What a new user meets first: error messages, warnings, help texts and reprs."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trioconfd import (
    ConfdClientError,
    ConfdReply,
    ErrorCode,
    ReplyStatus,
    RequestType,
    open_confd_client,
)
from trioconfd.cli._main import EXIT_ERROR_REPLY, EXIT_OK, EXIT_USAGE, build_parser
from trioconfd.testing import (
    ConfdServer,
    make_cluster_config,
    open_confd_server,
    open_fault_proxy,
    open_simulated_cluster,
)

from .conftest import write_key_file
from .test_cli import peer_args, run_cli

KEY = b"newcomer key\n"
CONFIG = make_cluster_config(nodes=3, instances=2, serial=7)


@pytest.fixture
async def server() -> AsyncIterator[ConfdServer]:
    async with open_confd_server(CONFIG, KEY) as server:
        yield server


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_file(tmp_path, KEY)


# -- error replies say what the code means ------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (ConfdReply(ReplyStatus.OK, 2, 7), None),
        (
            ConfdReply(ReplyStatus.ERROR, 2, 0),
            "ARGUMENT: the query was not understood (a bad argument, or nothing at that path)",
        ),
        (ConfdReply(ReplyStatus.ERROR, 0, 0), "UNKNOWN_ENTRY: no such entry"),
        (ConfdReply(ReplyStatus.ERROR, 1, 0), "INTERNAL: the daemon failed to answer"),
        (ConfdReply(ReplyStatus.ERROR, "Node x not found", 0), "Node x not found"),
        (ConfdReply(ReplyStatus.ERROR, 9, 0), "error 9"),
        (ConfdReply(ReplyStatus.ERROR, True, 0), "error true"),  # a bool is not a code
        (ConfdReply(ReplyStatus.NOTIMPLEMENTED, 0, 0), "NOTIMPLEMENTED: the daemon does not"),
    ],
)
def test_an_error_reply_says_what_it_means(reply: ConfdReply, expected: str | None) -> None:
    if expected is None:
        assert reply.error is None
    else:
        assert reply.error is not None
        assert reply.error.startswith(expected)


def test_error_codes_name_themselves() -> None:
    assert ConfdReply(ReplyStatus.ERROR, 0, 0).error_code is ErrorCode.UNKNOWN_ENTRY
    assert ConfdReply(ReplyStatus.ERROR, "text", 0).error_code is None
    assert ConfdReply(ReplyStatus.OK, 0, 0).error_code is None  # an OK answer 0 is no error
    assert all(code.meaning and code.describe().startswith(code.name) for code in ErrorCode)


def test_a_deeply_nested_error_answer_is_described_without_recursion_error() -> None:
    deep: object = []
    for _ in range(100_000):
        deep = [deep]
    assert ConfdReply(ReplyStatus.ERROR, deep, 0).error == (
        "error (an answer nested too deeply to show)"
    )


async def test_the_cli_names_the_error_code(server: ConfdServer, key_file: Path) -> None:
    args = [*peer_args([server]), "--key-file", str(key_file)]
    done = await run_cli("config", "/nosuch", *args)
    assert done.returncode == EXIT_ERROR_REPLY
    # A path that leads nowhere is an ARGUMENT error on the wire; said as such.
    assert "trioconfd: not found: nothing at /nosuch in the configuration" in (done.stderr.decode())
    done = await run_cli("config", "/nosuch", *args, "--json")
    assert done.returncode == EXIT_ERROR_REPLY
    error = json.loads(done.stdout)["error"]
    assert (error["code"], error["name"]) == (2, "ARGUMENT")
    assert error["message"].startswith("ARGUMENT: the query was not understood")
    done = await run_cli("ping", *args, "--json")
    assert json.loads(done.stdout)["error"] is None


async def test_the_cli_says_each_ips_outcome(server: ConfdServer, key_file: Path) -> None:
    done = await run_cli(
        "node-pip-by-instance-ip",
        "198.18.0.1",
        "203.0.113.1",
        *peer_args([server]),
        "--key-file",
        str(key_file),
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.decode().splitlines() == [
        "198.18.0.1 192.0.2.1",
        "203.0.113.1 not found",
    ]


async def test_a_bad_ip_is_refused_before_anything_is_sent(key_file: Path) -> None:
    done = await run_cli(
        "node-pip-by-instance-ip", "notanip", "--peer", "127.0.0.1:9", "--key-file", str(key_file)
    )
    assert done.returncode == EXIT_USAGE
    assert "ip must be an IP address, not 'notanip'" in done.stderr.decode()


async def test_ping_explains_what_it_printed(server: ConfdServer, key_file: Path) -> None:
    done = await run_cli("ping", *peer_args([server]), "--key-file", str(key_file))
    assert done.returncode == EXIT_OK
    assert done.stdout.decode().strip() == "3000000"  # the bare answer, for scripts
    explained = done.stderr.decode()
    assert "3000000 is the configuration format version (Ganeti 3.0.0)" in explained
    assert "1 of 1 asked are up, read our key" in explained


# -- warnings ------------------------------------------------------------------


async def test_warnings_are_one_plain_line(server: ConfdServer, tmp_path: Path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o644)
    done = await run_cli("ping", *peer_args([server]), "--key-file", str(key_file))
    assert done.returncode == EXIT_OK, done.stderr
    lines = done.stderr.decode().splitlines()
    warned = [line for line in lines if "warning" in line.lower()]
    assert len(warned) == 1, lines
    assert warned[0].startswith("trioconfd: warning: ")
    assert "accessible to other users (mode 644); chmod 600 it" in warned[0]
    assert ".py" not in done.stderr.decode()  # no source file, no line of our code


# -- help texts ----------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def test_every_option_and_argument_has_help_with_its_default() -> None:
    subcommands = _subcommands(build_parser())
    assert len(subcommands) == 16  # 12 queries, watch, serve, bench, demo
    watched = _subcommands(subcommands["watch"])
    assert len(watched) == 12  # watch takes any query
    subcommands.update({f"watch {name}": parser for name, parser in watched.items()})
    for name, parser in subcommands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{name} {action.option_strings or action.dest}"
            assert action.help, f"{where} has no help"
            if action.option_strings:
                assert "default" in action.help or action.required, f"{where} hides its default"
            if action.default not in (None, False, [], argparse.SUPPRESS):
                expanded = action.help % {"default": action.default}
                assert str(action.default) in expanded, f"{where}: default not shown"


async def test_help_shows_defaults() -> None:
    done = await run_cli("ping", "--help")
    text = " ".join(done.stdout.decode().split())
    assert "seconds to wait for a quorum, 0 or more; inf waits for ever (default: 10.0)" in text
    assert "(default: 0)" in text
    done = await run_cli("serve", "--help")
    assert "(default: 127.0.0.1)" in " ".join(done.stdout.decode().split())


# -- reprs ---------------------------------------------------------------------


async def test_reprs_say_what_things_are_and_never_the_key(server: ConfdServer) -> None:
    secret = "newcomer key"
    host, port = server.address
    expected = f"<ConfdServer {host}:{port} serial=7 answered=0 dropped=0 errors=0>"
    assert repr(server) == expected
    async with open_fault_proxy(server.address) as proxy:
        assert repr(proxy) == f"<FaultProxy {host}:{proxy.address[1]} -> {host}:{port} clients=0>"
    async with open_confd_client(KEY, [server.address]) as client:
        result = await client.query(RequestType.PING)
        client_repr = repr(client)
        assert "peers=1" in client_repr
    assert repr(result) == "<QueryResult OK serial=0 replies=1/1 needed=1>"
    for text in (repr(server), repr(proxy), client_repr, repr(result)):
        assert secret not in text


async def test_a_failed_querys_repr_says_so() -> None:
    async with open_simulated_cluster([CONFIG, CONFIG, CONFIG], KEY) as cluster:
        assert repr(cluster) == (
            "<SimulatedCluster peers=3 port=1814 up=3 reachable=3 serials=[7] seed=0>"
        )
        for index in range(3):
            cluster.crash(index)
        async with open_confd_client(KEY, cluster.peers) as client:
            result = await client.query(RequestType.PING, coverage=-1, timeout=0.5)
    assert repr(result) == "<QueryResult no reply replies=0/3 needed=2 timed_out>"


def test_bad_ip_builders_are_client_errors() -> None:
    from trioconfd import requests

    with pytest.raises(ConfdClientError, match="not 'nope'"):
        requests.node_pip_by_instance_ip("nope")


def test_a_reply_status_prints_as_its_name_and_compares_as_its_number() -> None:
    from trioconfd import ReplyStatus

    status = ReplyStatus.ERROR
    assert (str(status), f"{status}", f"{status:d}") == ("ERROR", "ERROR", "1")
    assert status == 1
    assert json.dumps({"status": status}) == '{"status": 1}'  # the wire's number


def test_the_public_api_shows_no_private_names() -> None:
    import inspect

    import trioconfd

    for name in trioconfd.__all__:
        thing = getattr(trioconfd, name)
        if not callable(thing):
            continue
        try:
            parameters = inspect.signature(thing).parameters
        except (TypeError, ValueError):  # some builtins and enums have none
            continue
        private = [parameter for parameter in parameters if parameter.startswith("_")]
        assert not private, f"{name}{inspect.signature(thing)} shows {private}"
        doc = inspect.getdoc(thing) or ""
        assert ":mod:`._" not in doc, f"{name}'s docstring names a private module"
