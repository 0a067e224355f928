"""``trioconfd serve``: the in-process server in the foreground, following its file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TextIO

import trio

from ..client import check_port, default_port, parse_peer_text, read_hmac_key, resolve_peers
from ..protocol import ConfdError, format_address
from ..testing import ConfdServer, open_confd_server

#: How often the configuration file is checked for changes, in seconds.
POLL_INTERVAL = 0.5


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


async def follow_config(path: Path, server: ConfdServer, out: TextIO, err: TextIO) -> None:
    """Reload ``path`` into ``server`` whenever it changes; keep the old one if it is bad.

    Reloads are reported on ``out``; problems (a bad file, the file gone) on
    ``err``, once each, however long they last.
    """
    seen = _signature(path)
    while True:
        await trio.sleep(POLL_INTERVAL)
        current = _signature(path)
        if current == seen:
            continue
        seen = current
        if current is None:
            print(
                f"{path} is gone (deleted or renamed): still serving serial {server.serial}; "
                "a file written there again is loaded",
                file=err,
                flush=True,
            )
            continue
        try:
            server.set_config(path)
        except ConfdError as exc:
            print(
                f"{path} not reloaded, still serving serial {server.serial}: {exc}",
                file=err,
                flush=True,
            )
        else:
            print(f"reloaded {path}: serial {server.serial}", file=out, flush=True)


async def where_to_bind(bind: str, port: int | None) -> tuple[str, int]:
    """``--bind`` and ``--port`` as an (IP, port): --bind is written as --peer is."""
    try:
        given = parse_peer_text(bind)
    except ConfdError as exc:
        raise ConfdError(str(exc).replace("bad peer", "bad --bind")) from None
    if isinstance(given, tuple) and port is not None:
        raise ConfdError(f"--bind {bind!r} names a port and --port {port} another: give one")
    _, ((host, bound_port),) = await resolve_peers(
        [given], default_port() if port is None else check_port(port)
    )
    return host, bound_port


async def run_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    key = read_hmac_key(args.key_file)
    host, port = await where_to_bind(args.bind, args.port)
    async with open_confd_server(args.config, key, host=host, port=port) as server:
        print(
            f"serving {args.config} (serial {server.serial}) on "
            f"{format_address(server.address)}; Ctrl-C stops",
            file=out,
            flush=True,
        )
        await follow_config(args.config, server, out, err)
    return 0
