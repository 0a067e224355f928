"""The ``trioconfd`` command: one subcommand per request type, plus serve, bench and demo."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import trio

from .. import requests
from .._version import __version__
from ..client import (
    PeerSpec,
    format_address,
    open_confd_client,
    parse_peer_text,
    read_hmac_key,
    read_master_candidate_ips,
)
from ..protocol import (
    ConfdError,
    ConfdReply,
    ConfdRequest,
    MasterField,
    NodeRole,
    QueryKey,
    QueryResult,
    ReplyStatus,
    RequestType,
)
from ._bench import run_bench
from ._demo import run_demo
from ._serve import run_serve

#: Exit codes: the answer was OK; the daemon answered with an error; the
#: command line or its files were wrong; no quorum replied in time.
EXIT_OK = 0
EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3

_FIELD_NAMES = {"name": MasterField.NAME, "ip": MasterField.IP, "mnode-pip": MasterField.MNODE_PIP}


class UsageError(Exception):
    """Something on the command line or in a file it names is wrong."""


def parse_peer(text: str) -> PeerSpec:
    """:func:`trioconfd.parse_peer_text`, with a usage error for a bad one."""
    try:
        return parse_peer_text(text)
    except ConfdError as exc:
        raise UsageError(str(exc)) from None


def _fields(text: str) -> list[MasterField]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in _FIELD_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown field(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(_FIELD_NAMES)
        )
    return [_FIELD_NAMES[name] for name in names]


def _at_least_one(kind: type[int] | type[float], least: float = 1) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` no smaller than ``least``."""

    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value >= least:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{text} is less than {least:g}")
        return value

    return convert


# -- the query subcommands ---------------------------------------------------

#: subcommand → (help, arguments to add, how to build the request from them)
_QUERIES: dict[
    str,
    tuple[str, Callable[[argparse.ArgumentParser], object], Callable[[Any], ConfdRequest]],
] = {
    "ping": ("check that the daemons answer", lambda p: None, lambda a: requests.ping()),
    "master": (
        "the cluster's master (or the fields asked for)",
        lambda p: p.add_argument(
            "--fields",
            type=_fields,
            help="comma-separated: name, ip, mnode-pip (default: the master's name alone)",
        ),
        lambda a: requests.cluster_master(a.fields),
    ),
    "node-role": (
        "a node's role",
        lambda p: p.add_argument("node", help="the node's name, as the cluster knows it"),
        lambda a: requests.node_role(a.node),
    ),
    "node-pips": ("every node's primary IP", lambda p: None, lambda a: requests.node_pip_list()),
    "mc-pips": (
        "the master candidates' primary IPs",
        lambda p: None,
        lambda a: requests.mc_pip_list(),
    ),
    "instance-ips": (
        "instance IPs on a link",
        lambda p: p.add_argument(
            "--link", help="the network link (default: the cluster's default link)"
        ),
        lambda a: requests.instances_ips_list(a.link),
    ),
    "node-pip-by-instance-ip": (
        "the primary IP of the node running each instance IP",
        lambda p: (
            p.add_argument("ips", nargs="+", metavar="IP", help="instance IP addresses"),
            p.add_argument("--link", help="the network link (default: the cluster's default link)"),
        ),
        lambda a: (
            requests.node_pip_by_instance_ip(a.ips[0], a.link)
            if len(a.ips) == 1
            else requests.node_pips_by_instance_ips(a.ips, a.link)
        ),
    ),
    "node-drbd": (
        "a node's DRBD minors",
        lambda p: p.add_argument("node", help="the node's name, as the cluster knows it"),
        lambda a: requests.node_drbd(a.node),
    ),
    "node-instances": (
        "a node's primary and secondary instances",
        lambda p: p.add_argument("node", help="the node's name, as the cluster knows it"),
        lambda a: requests.node_instances(a.node),
    ),
    "instance-disks": (
        "an instance's disks",
        lambda p: p.add_argument("instance", help="the instance's name"),
        lambda a: requests.instance_disks(a.instance),
    ),
    "config": (
        "the configuration value at a JSON pointer",
        lambda p: p.add_argument(
            "pointer", metavar="JSON-POINTER", help="an RFC 6901 pointer, e.g. /cluster/uuid"
        ),
        lambda a: requests.config_query(a.pointer),
    ),
    "data-collectors": (
        "the data collectors' settings",
        lambda p: None,
        lambda a: requests.data_collectors(),
    ),
}


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where and how to ask")
    group.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="ADDR",
        help="a daemon to ask: IP, host name, HOST:PORT or [IPv6]:PORT (repeatable; "
        "names are resolved once; default: this node's master candidates)",
    )
    group.add_argument(
        "--port",
        type=int,
        help="port of peers given without one (default: the services database's "
        "ganeti-confd, else 1814)",
    )
    group.add_argument(
        "--source",
        metavar="ADDR",
        help="the local address to send from: IP, IP:PORT or [IPv6]:PORT, of the peers' "
        "family (default: any; on a multihomed node, the address the daemons expect)",
    )
    keys = group.add_mutually_exclusive_group()
    keys.add_argument(
        "--key-file",
        type=Path,
        help="the cluster's key file (default: this node's, "
        "$GANETI_ROOTDIR/var/lib/ganeti/hmac.key)",
    )
    keys.add_argument(
        "--hmac-key",
        help="the key itself, instead of a file (default: none; visible to other local users)",
    )
    group.add_argument(
        "--coverage",
        type=int,
        default=0,
        help="peers to ask: 0 up to 6, -1 all, N exactly N (default: %(default)s)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for a quorum (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioconfd",
        description="Ask Ganeti's confd daemons, serve a configuration, or see a demo.",
        epilog="Exit status: 0 OK, 1 the daemons answered with an error, 2 usage error, "
        "3 timeout (no quorum replied).",
    )
    parser.add_argument("--version", action="version", version=f"trioconfd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, _) in _QUERIES.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        _add_client_options(sub)
        sub.add_argument(
            "--json", action="store_true", help="print the result as JSON (default: text)"
        )

    serve = commands.add_parser(
        "serve",
        help="answer confd requests from a config.data file",
        description="Run the in-process confd server in the foreground, "
        "reloading the configuration when the file changes.",
    )
    serve.add_argument(
        "config", type=Path, metavar="CONFIG", help="a Ganeti config.data (JSON) to answer from"
    )
    serve.add_argument(
        "--key-file", type=Path, required=True, help="the HMAC key file (required; no default)"
    )
    serve.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="where to listen, written as --peer is: IP, host name, HOST:PORT or "
        "[IPv6]:PORT (default: %(default)s)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="the port to listen on (default: the services database's ganeti-confd, else 1814)",
    )

    bench = commands.add_parser(
        "bench",
        help="time sequential and concurrent queries",
        description="Time sequential and concurrent queries against the peers.",
    )
    _add_client_options(bench)
    bench.add_argument(
        "--requests",
        type=_at_least_one(int),
        default=1000,
        help="queries per phase (default: %(default)s)",
    )
    bench.add_argument(
        "--concurrency",
        type=_at_least_one(int),
        default=64,
        help="queries in flight in the concurrent phase, at most --requests (default: %(default)s)",
    )
    bench.add_argument(
        "--progress-interval",
        type=_at_least_one(float, 0.01),
        default=5.0,
        metavar="SECONDS",
        help="seconds between progress lines when standard error is not a terminal "
        "(default: %(default)s)",
    )
    bench.add_argument(
        "--json", action="store_true", help="print the figures as JSON (default: text)"
    )

    commands.add_parser(
        "demo",
        help="tour the client against three in-process servers",
        description="Start three in-process confd servers on loopback and tour the client.",
    )
    return parser


# -- running -----------------------------------------------------------------


def resolve_key_and_peers(args: argparse.Namespace) -> tuple[bytes | str, list[PeerSpec]]:
    """The key and the peers from the options, else from this Ganeti node's files."""
    try:
        if args.hmac_key is not None:
            if not args.hmac_key:
                raise UsageError("--hmac-key is empty")
            key: bytes | str = args.hmac_key
        else:
            key = read_hmac_key(args.key_file)
        peers = [parse_peer(peer) for peer in args.peer] or list(read_master_candidate_ips())
    except ConfdError as exc:
        raise UsageError(str(exc)) from None
    return key, peers


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    return json.dumps(value, indent=2, sort_keys=True)


def _describe(request: ConfdRequest, result: QueryResult) -> str:
    answer = result.answer
    if request.type is RequestType.NODE_ROLE_BYNAME and result.status is ReplyStatus.OK:
        with contextlib.suppress(ValueError):  # a role this version does not know
            answer = f"{NodeRole(answer).name.lower()} ({answer})"
    ips = request.query.get(QueryKey.IPLIST.value) if isinstance(request.query, dict) else None
    if ips is not None and isinstance(answer, list) and len(answer) == len(ips):
        # One [status, answer, serial] per IP asked: say each one's outcome.
        return "\n".join(_per_ip(ip, row) for ip, row in zip(ips, answer, strict=True))
    return _render(answer)


def _per_ip(ip: str, row: Any) -> str:
    try:
        reply = ConfdReply(ReplyStatus(row[0]), row[1], row[2])
    except (TypeError, ValueError, IndexError, KeyError):
        return f"{ip} {json.dumps(row)}"
    return f"{ip} {reply.answer if reply.ok else reply.error}"


def error_as_json(result: QueryResult) -> dict[str, Any] | None:
    """The error a result's trusted reply names: code, name and words; None if none."""
    if result.best is None or result.best.ok:
        return None
    code = result.best.error_code
    return {
        "code": None if code is None else int(code),
        "name": None if code is None else code.name,
        "message": result.error,
    }


def result_as_json(result: QueryResult) -> dict[str, Any]:
    return {
        "answer": result.answer,
        "serial": result.serial,
        "status": None if result.status is None else result.status.name,
        "error": error_as_json(result),
        "sent": result.sent,
        "received": result.received,
        "needed": result.needed,
        "timed_out": result.timed_out,
        "consistent": result.consistent,
        "diagnosis": list(result.diagnosis),
        "send_errors": [
            {"peer": format_address(peer), "error": error} for peer, error in result.send_errors
        ],
        "discards": dict(result.discards),
        "replies": [
            {
                "peer": format_address(reply.address),
                "status": reply.reply.status.name,
                "serial": reply.reply.serial,
                "answer": reply.reply.answer,
            }
            for reply in result.replies
        ],
    }


def exit_code(result: QueryResult) -> int:
    if result.timed_out or result.best is None:
        return EXIT_TIMEOUT
    return EXIT_OK if result.best.ok else EXIT_ERROR_REPLY


def report(
    request: ConfdRequest, result: QueryResult, as_json: bool, out: TextIO, err: TextIO
) -> int:
    """Print ``result`` for people (or as JSON) and return the exit code."""
    code = exit_code(result)
    if as_json:
        print(json.dumps(result_as_json(result), indent=2), file=out)
        return code
    summary = (
        f"serial {result.serial}, {result.received}/{result.sent} replies "
        f"(quorum {result.needed}), "
        + ("replies agree" if result.consistent else "REPLIES DISAGREE at one serial")
    )
    if code == EXIT_TIMEOUT:
        print(
            f"trioconfd: no quorum: {result.received}/{result.sent} replies in time, "
            f"{result.needed} needed",
            file=err,
        )
        for cause in result.diagnosis:
            print(f"  {cause}", file=err)
        if result.best is None:
            return code
    if code == EXIT_ERROR_REPLY:
        print(f"trioconfd: the daemons answered with an error: {result.error}", file=err)
        print(summary, file=err)
        return code
    print(_describe(request, result), file=out)
    if request.type is RequestType.PING:
        print(_explain_ping(result), file=err)
    print(summary, file=err)
    return code


def _explain_ping(result: QueryResult) -> str:
    version = result.answer
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        # Ganeti writes version major.minor.revision as major*10^6 + minor*10^4 + revision.
        major, rest = divmod(version, 1_000_000)
        minor, revision = divmod(rest, 10_000)
        named = f" (Ganeti {major}.{minor}.{revision})"
    else:
        named = ""
    return (
        f"{version} is the configuration format version{named} of the daemons that "
        f"replied: {result.received} of {result.sent} asked are up, read our key, and "
        "find our clock within 300 s of theirs"
    )


async def run_query(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    request = _QUERIES[args.command][2](args)
    key, peers = resolve_key_and_peers(args)
    try:
        async with open_confd_client(
            key, peers, port=args.port, local_address=args.source
        ) as client:
            result = await client.query(request, coverage=args.coverage, timeout=args.timeout)
    except ConfdError as exc:
        raise UsageError(as_option_names(str(exc))) from None
    return report(request, result, args.json, out, err)


def as_option_names(message: str) -> str:
    """An error message of the API, in the command line's words."""
    return message.replace("local_address", "--source")


def _fail(message: str, err: TextIO) -> NoReturn:
    print(f"trioconfd: error: {message}", file=err)
    raise SystemExit(EXIT_USAGE)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line read; a mistake is shown with its subcommand's usage."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse reports these with the top-level usage, which lists no
        # subcommand's options: the subcommand's own usage helps more.
        (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = parse_arguments(argv)
    out, err = sys.stdout, sys.stderr
    for stream in (out, err):
        # An answer may hold what no encoding can write (a lone surrogate from
        # a JSON escape, or from an argument that was not UTF-8): escape it.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    with warnings.catch_warnings():
        warnings.showwarning = _plain_warning(err)
        return _run(args, out, err)


def _plain_warning(err: TextIO) -> Callable[..., None]:
    """A warning as one line for the person at the terminal, without our source lines."""

    def show(message: Warning | str, *_: object, **__: object) -> None:
        print(f"trioconfd: warning: {message}", file=err)

    return show


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        if args.command == "demo":
            return trio.run(run_demo, out)
        if args.command == "serve":
            return trio.run(run_serve, args, out)
        if args.command == "bench":
            key, peers = resolve_key_and_peers(args)
            return trio.run(run_bench, key, peers, args, out, err)
        return trio.run(run_query, args, out, err)
    except UsageError as exc:
        _fail(str(exc), err)
    except ConfdError as exc:
        _fail(as_option_names(str(exc)), err)
    except KeyboardInterrupt:
        return 130
