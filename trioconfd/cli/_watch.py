"""``trioconfd watch``: a query's answer, then each change of it, with the time."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import TextIO

from ._parser import QUERIES, cli_client
from ._render import describe, result_as_json


async def run_watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print each trusted change until Ctrl-C (which the caller turns into status 130)."""
    request = QUERIES[args.watched][2](args)
    async with cli_client(args) as client:
        changes = client.watch(
            request, interval=args.interval, coverage=args.coverage, timeout=args.timeout
        )
        async for result in changes:
            when = datetime.now().astimezone().isoformat(timespec="seconds")
            if args.json:
                print(json.dumps({"time": when, **result_as_json(result)}), file=out)
            else:
                answer = describe(request, result)
                joined = f"\n{answer}" if "\n" in answer else f" {answer}"
                print(f"{when} serial {result.serial}:{joined}", file=out)
            out.flush()
    return 0  # never reached: a watch ends only when interrupted
