"""``trioconfd watch``: a query's answer, then each change of it, with the time."""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime
from typing import TextIO

import trio

from ..client import Watch
from ..protocol import ConfdRequest, QueryResult
from ._parser import QUERIES, cli_client
from ._render import result_as_json, shown


async def run_watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print each trusted change until Ctrl-C (which the caller turns into status 130).

    While no quorum answers, standard error says so (again when the verdict
    changes): a watch that prints nothing is not left to look like one
    whose answer never changes.
    """
    request = QUERIES[args.watched][2](args)
    async with cli_client(args) as client:
        # Made here, outside the nursery: what it refuses is a usage error.
        changes = client.watch(
            request, interval=args.interval, coverage=args.coverage, timeout=args.timeout
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_say_when_no_quorum, changes, args, err)
            async for result in changes:
                _print_change(request, result, args.json, out)
    return 0  # never reached: a watch ends only when interrupted


def _print_change(request: ConfdRequest, result: QueryResult, as_json: bool, out: TextIO) -> None:
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    if as_json:
        print(json.dumps({"time": when, **result_as_json(result, request)}), file=out)
    else:
        answer, remark = shown(request, result)
        text = answer if answer is not None else remark or ""
        joined = f"\n{text}" if "\n" in text else f" {text}"
        print(f"{when} serial {result.serial}:{joined}", file=out)
    out.flush()


async def _say_when_no_quorum(changes: Watch, args: argparse.Namespace, err: TextIO) -> None:
    # Looks once an ask has had the time to end (its timeout, or an interval).
    timeout = args.timeout if math.isfinite(args.timeout) else args.interval
    said = None
    while True:
        await trio.sleep(args.interval + timeout)
        verdict = changes.verdict
        if verdict is None or verdict.quorum_reached:
            said = None
            continue
        line = f"trioconfd: no quorum: {verdict.verdict}"
        if line != said:
            print(line, file=err, flush=True)
            said = line
