"""The ``trioconfd`` command line: its options, subcommands and their arguments."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import requests
from .._version import __version__
from ..client import (
    DEFAULT_MAX_OUTSTANDING,
    ConfdClient,
    PeerSpec,
    open_confd_client,
    parse_peer_text,
    read_hmac_key,
    read_master_candidate_ips,
)
from ..protocol import (
    ConfdError,
    ConfdRequest,
    MasterField,
)

if TYPE_CHECKING:
    from _typeshed import SupportsWrite


#: Queries a phase of ``bench`` asks at most (a billion: days of work).
MOST_BENCH_REQUESTS = 10**9

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


def _file_name(text: str) -> Path:
    """An argparse type: a file's name, not empty (``Path("")`` is the directory here)."""
    if not text:
        raise argparse.ArgumentTypeError("the file name is empty")
    return Path(text)


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more (``inf``: for ever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of seconds 0 or more (inf waits for ever)"
        )
    return value


def _interval(text: str) -> float:
    """An argparse type: a number of seconds above 0, finite."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0, finite")
    return value


def _at_least_one(
    kind: type[int] | type[float], least: float = 1, most: float = math.inf
) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` from ``least`` to ``most``."""

    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
        shown = text if len(text) <= 40 else f"{text[:37]}..."
        if not value >= least:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{shown} is less than {least:g}")
        if value > most:
            raise argparse.ArgumentTypeError(f"{shown} is more than {most:,}")
        return value

    return convert


# -- the query subcommands ---------------------------------------------------

#: subcommand → (help, arguments to add, how to build the request from them)
QUERIES: dict[
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
        type=_file_name,
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
        type=_seconds,
        default=10.0,
        help="seconds to wait for a quorum, 0 or more; inf waits for ever (default: %(default)s)",
    )


def _query_parsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    """A subcommand for each query, with its own arguments and the client's options."""
    parsers = []
    for name, (help_text, add_arguments, _) in QUERIES.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        _add_client_options(sub)
        parsers.append(sub)
    return parsers


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but for help or a version on standard output that cannot
    be written: argparse ignores the error, and the command would exit 0."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message and file is not None and file is sys.__stdout__ is sys.stdout:
            # The process's own standard output (a test's capture is left to argparse):
            # an OSError goes to main(), exit status 74 (141: a pipe closed early).
            sys.__stdout__.write(message)
            sys.__stdout__.flush()
        else:
            super()._print_message(message, file)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="trioconfd",
        description="Ask Ganeti's confd daemons, serve a configuration, or see a demo.",
        epilog="Exit status: 0 OK, 1 the daemons answered with an error, 2 usage error, "
        "3 timeout (no quorum replied), 74 standard output could not be written, "
        "130 Ctrl-C, 141 standard output closed early.",
    )
    parser.add_argument("--version", action="version", version=f"trioconfd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in _query_parsers(commands):
        sub.add_argument(
            "--json", action="store_true", help="print the result as JSON (default: text)"
        )
        sub.add_argument(
            "--partial",
            action="store_true",
            help="without a quorum, still print the best reply that arrived on standard "
            "output (default: only on standard error, with the verdict; exit status 3 either way)",
        )

    watch = commands.add_parser(
        "watch",
        help="print a query's answer, then each time it changes",
        description="Ask every --interval seconds and print the trusted answer (a quorum's, "
        "with the newest serial) each time it or its serial changes, with the time; a quorum "
        "of stale peers or no quorum is not a change. Ctrl-C stops.",
    )
    watched = watch.add_subparsers(dest="watched", metavar="QUERY", required=True)
    for sub in _query_parsers(watched):
        sub.add_argument(
            "--interval",
            type=_interval,
            default=5.0,
            help="seconds from one ask to the next (default: %(default)s)",
        )
        sub.add_argument(
            "--json",
            action="store_true",
            help="print each change as one line of JSON (default: text)",
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
        "--key-file",
        type=_file_name,
        required=True,
        help="the HMAC key file (required; no default)",
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
        type=_at_least_one(int, most=MOST_BENCH_REQUESTS),
        default=1000,
        help="queries per phase (default: %(default)s)",
    )
    bench.add_argument(
        "--concurrency",
        type=_at_least_one(int, most=DEFAULT_MAX_OUTSTANDING),
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


def as_option_names(message: str) -> str:
    """An error message of the API, in the command line's words."""
    return message.replace("local_address", "--source")


@asynccontextmanager
async def cli_client(args: argparse.Namespace) -> AsyncIterator[ConfdClient]:
    """The client the options describe; the API's errors, in the command line's words."""
    key, peers = resolve_key_and_peers(args)
    try:
        async with open_confd_client(
            key, peers, port=args.port, local_address=args.source
        ) as client:
            yield client
    except ConfdError as exc:
        raise UsageError(as_option_names(str(exc))) from None


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
