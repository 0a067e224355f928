"""Watch the cluster master and react when it changes.

    python examples/watch_master.py --peer 192.0.2.1 --peer 192.0.2.2 --key-file hmac.key

On a Ganeti node the peers and the key default to the node's own. Each
change is printed; a real service would move a virtual IP, reconfigure a
proxy, page someone... ``--changes N`` stops after N changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

import trioconfd
from trioconfd import requests


async def watch(args: argparse.Namespace) -> None:
    key = trioconfd.read_hmac_key(args.key_file) if args.key_file else None
    peers = args.peer or None
    async with trioconfd.open_confd_client(key, peers, port=args.port) as client:
        master, changes = None, 0
        # One trusted verdict per change of the answer or its serial; a stale
        # quorum (an older serial) or no quorum at all is not a change.
        async for result in client.watch(
            requests.cluster_master(), interval=args.interval, timeout=args.interval * 4
        ):
            if master is None:
                print(f"master is {result.answer} (serial {result.serial})", flush=True)
            elif result.answer != master:
                changes += 1
                print(
                    f"master changed: {master} -> {result.answer} (serial {result.serial})",
                    flush=True,
                )
            master = result.answer
            if args.changes is not None and changes >= args.changes:
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peer", action="append", type=trioconfd.parse_peer_text, help="IP, IP:PORT or [IPv6]:PORT"
    )
    parser.add_argument("--port", type=int)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between queries")
    parser.add_argument("--changes", type=int, help="stop after this many changes")
    trio.run(watch, parser.parse_args())


if __name__ == "__main__":
    main()
