"""Which node runs the instance with this IP?

    python examples/node_for_instance_ip.py 198.18.0.3 --peer 192.0.2.1 --key-file hmac.key

Asks for the primary IP of the node running the instance, then the nodes'
names by JSON pointer, and prints both. Exit status 1 if the IP is unknown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

import trioconfd
from trioconfd import requests


async def find(args: argparse.Namespace) -> int:
    key = trioconfd.read_hmac_key(args.key_file) if args.key_file else None
    async with trioconfd.open_confd_client(key, args.peer or None, port=args.port) as client:
        located = await client.query(requests.node_pip_by_instance_ip(args.ip, link=args.link))
        if not located.ok:
            print(f"{args.ip}: not an instance IP here ({located.verdict})", file=sys.stderr)
            return 1
        nodes = await client.query(requests.config_query("/nodes"))
        names = {node["primary_ip"]: node["name"] for node in nodes.answer.values()}
        node_ip = located.answer
        print(f"{args.ip} runs on {names.get(node_ip, 'an unknown node')} ({node_ip})")
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ip")
    parser.add_argument("--link", help="the NIC link (default: the cluster's default)")
    parser.add_argument(
        "--peer", action="append", type=trioconfd.parse_peer_text, help="IP, IP:PORT or [IPv6]:PORT"
    )
    parser.add_argument("--port", type=int)
    parser.add_argument("--key-file", type=Path)
    raise SystemExit(trio.run(find, parser.parse_args()))


if __name__ == "__main__":
    main()
