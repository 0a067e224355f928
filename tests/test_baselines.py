"""The benchmarks' baselines do the wire work they claim, against the in-process server."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from benchmarks import instructions, revision_cost
from benchmarks.baselines import (
    raw_fan_out,
    raw_pipelined,
    raw_reply,
    raw_request,
    trioconfd_throughput,
)
from benchmarks.shape_floor import _counting_batches, floor_throughput
from trioconfd import ConfdRequest, RequestType
from trioconfd.protocol import pack_request, unpack_request
from trioconfd.testing import make_cluster_config, open_confd_server

KEY = b"baseline key\n"


def test_a_raw_request_is_signed_and_a_forged_reply_is_refused() -> None:
    datagram, rsalt = raw_request(KEY)
    assert datagram.startswith(b"plj0")
    assert rsalt.encode() in datagram
    assert raw_reply(KEY, b"plj0{}") is None
    assert raw_reply(KEY, datagram) is not None  # its envelope is signed with KEY
    assert raw_reply(b"another key\n", datagram) is None
    assert raw_reply(KEY, b"plj0" + b"\xff" * 10) is None


def test_the_raw_request_asks_what_trioconfds_query_asks() -> None:
    # The same request on the wire (the rows compare the same work: an
    # error reply, to a request the daemon cannot answer, costs it less).
    datagram, rsalt = raw_request(KEY)
    request, _ = unpack_request(datagram, KEY)
    ours, _ = unpack_request(pack_request(ConfdRequest(RequestType.CLUSTER_MASTER), KEY), KEY)
    assert (request.type, request.query, request.protocol, request.rsalt) == (
        ours.type,
        ours.query,
        ours.protocol,
        rsalt,
    )
    assert request.type is RequestType.CLUSTER_MASTER


async def test_the_floor_and_the_raw_socket_get_their_quorum_from_real_answers() -> None:
    config = make_cluster_config(nodes=3, serial=1)
    async with (
        open_confd_server(config, KEY) as one,
        open_confd_server(config, KEY) as two,
        open_confd_server(config, KEY) as three,
    ):
        addresses = [one.address, two.address, three.address]
        servers = (one, two, three)
        floor = await _counting_batches(floor_throughput(KEY, addresses, in_flight=8, total=200))
        assert (floor["timeouts"], floor["per_second"] > 0, floor["cpu_us"] > 0) == (0, True, True)
        # The CPU a query, and its user and system parts apart.
        assert floor["user_us"] >= 0
        assert floor["system_us"] >= 0
        assert floor["user_us"] + floor["system_us"] == pytest.approx(floor["cpu_us"])
        # The floor asks every peer once a query, and reads at least a quorum's replies.
        assert sum(server.stats.answered for server in servers) == 600
        assert floor["batches_per_query"] > 0
        assert floor["datagrams_per_batch"] * floor["batches_per_query"] * 200 >= 400
        # The floor holding more objects a query (--ballast) does the same work.
        heavier = await floor_throughput(KEY, addresses, in_flight=8, total=100, ballast=25)
        assert (heavier["timeouts"], heavier["answered"]) == (0, 100)
        assert sum(server.stats.answered for server in servers) == 900
        ours = await trioconfd_throughput(KEY, addresses, in_flight=8, total=200)
        assert ours["timeouts"] == 0
        # 8 in flight, windows of 64: nothing waits, nothing is lost.
        assert (ours["waited_share"], ours["window_cuts"], ours["retransmitted"]) == (0, 0, 0)
        crowded = await trioconfd_throughput(KEY, addresses, in_flight=100, total=200)
        assert crowded["waited_share"] > 0  # 100 in flight: some wait for the 64 places
        # With a wrong key, the servers drop every request: every query times out.
        wrong = await floor_throughput(b"wrong\n", addresses, in_flight=4, total=4, timeout=0.2)
        assert (wrong["timeouts"], wrong["per_second"]) == (4, 0)
        assert sum(server.stats.dropped for server in servers) == 12

        def blocking() -> tuple[list[float], dict[str, float]]:
            return raw_fan_out(KEY, addresses, 20), raw_pipelined(KEY, addresses, 100, window=16)

        latencies, pipelined = await trio.to_thread.run_sync(blocking)
        assert len(latencies) == 20
        assert pipelined["timeouts"] == 0
        assert pipelined["user_us"] + pipelined["system_us"] == pytest.approx(pipelined["cpu_us"])


async def test_query_memory_puts_every_byte_down_to_a_part() -> None:
    from benchmarks.query_memory import measure

    figures = await measure(100)  # more than the 64 places a window starts with
    for program in ("trioconfd", "trioconfd, default admission", "shape floor"):
        row = figures[program]
        assert row["bytes"] > figures["bare task"] > 0  # a query holds more than its task
        assert sum(row["parts"].values()) == pytest.approx(row["bytes"])
    # trioconfd's parts are its own: its channel pair, request in flight, places.
    parts = figures["trioconfd"]["parts"]
    for part in ("channel pair", "request in flight", "admission places"):
        assert parts.get(part, 0) > 0, part
    # Sent, a query keeps no packed copy of its request (re-packed to resend),
    # and its table entry no set of its own until a peer answers.
    assert abs(parts.get("datagram", 0)) < 8
    assert abs(parts.get("route", 0)) < 8
    # With admission, 36 of the 100 wait for a place: no channel pair yet, a
    # place in a line.
    waiting = figures["trioconfd, default admission"]["parts"]
    assert waiting["channel pair"] < parts["channel pair"]
    assert waiting["admission places"] > parts["admission places"]


def test_the_admission_wait_rows_run_every_query_to_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import benchmarks.admission_wait as bench

    ended: list[int] = []
    run = bench._run

    async def counted(peers: int, count: int, seed: int, take: bench.Take) -> float:
        taken = 0

        async def counting(targets: list[object]) -> bench.Release:
            nonlocal taken
            taken += 1
            return await take(targets)

        figure = await run(peers, count, seed, counting)
        ended.append(taken)
        return figure

    monkeypatch.setattr(bench, "_run", counted)
    figures = bench.measure(peers=3, count=600, rounds=1)
    assert ended == [600] * 6  # every row ran every query to its end (none hung)
    assert len(figures) == 7
    assert all(value > 0 for value in figures.values())


async def test_revision_cost_runs_a_client_in_its_own_process_with_its_options() -> None:
    config = make_cluster_config(nodes=3, serial=1)
    async with (
        open_confd_server(config, revision_cost.KEY) as one,
        open_confd_server(config, revision_cost.KEY) as two,
    ):
        spec = {
            "peers": [list(one.address), list(two.address)],
            "total": 100,
            "window": 4,
            "no_retry": True,
        }
        root = revision_cost.SCRIPT.parent.parent
        done = await trio.run_process(
            [sys.executable, str(revision_cost.SCRIPT), "--client", json.dumps(spec)],
            capture_stdout=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        answered = one.stats.answered + two.stats.answered
    figures = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert figures["timeouts"] == 0
    assert (figures["window"], figures["retry"]) == (4, False)  # its options, applied
    assert figures["cpu_us"] > 0
    assert figures["per_second"] > 0
    # The warm-up and two drives, every query to both peers, each sent once.
    assert answered == 2 * (revision_cost.WARM_UP + 2 * 100)


@pytest.mark.parametrize(
    ("program", "schedule"), [("floor", "off"), ("trioconfd", "off"), ("trioconfd", "planned")]
)
async def test_the_instruction_count_child_runs_its_program_to_the_end(
    program: str, schedule: str
) -> None:
    config = make_cluster_config(nodes=3, serial=1)
    async with open_confd_server(config, instructions.KEY) as one:
        spec = {
            "peers": [list(one.address)],
            "in_flight": 8,
            "queries": 40,
            "program": program,
            "schedule": schedule,
        }
        root = instructions.SCRIPT.parent.parent
        done = await trio.run_process(
            [sys.executable, str(instructions.SCRIPT), "--client", json.dumps(spec)],
            capture_stdout=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        answered = one.stats.answered
    assert json.loads(done.stdout.decode().strip().splitlines()[-1]) == {"timeouts": 0}
    assert answered == 40  # each query sent once: no retransmission


def test_the_instruction_count_is_read_from_cachegrinds_report() -> None:
    report = "==7== Cachegrind, a cache profiler\n==7== \n==7== I   refs:      1,021,183,203\n"
    assert instructions.instructions_of(report) == 1_021_183_203
    with pytest.raises(ValueError, match="I refs"):
        instructions.instructions_of("==7== Command: python\n")


def test_cache_misses_are_read_from_cachegrinds_report() -> None:
    report = (
        "==7== I   refs:      1,021,183,203\n==7== D1  misses:       14,516,181  "
        "( 12,476,496 rd   +   2,039,685 wr)\n==7== LL misses:           369,714  "
        "(     92,402 rd   +     277,312 wr)\n==7== LLd misses:          348,964  "
        "(     71,652 rd   +     277,312 wr)\n"
    )
    counted = {
        figure: instructions.counter_of(report, name)
        for figure, name in instructions.COUNTERS.items()
    }
    assert counted == {"instructions": 1_021_183_203, "D1 misses": 14_516_181, "L2 misses": 348_964}
    with pytest.raises(ValueError, match="LLd misses"):
        instructions.counter_of("==7== I   refs:      1\n", "LLd misses")


def test_the_second_level_cache_is_read_from_sysfs(tmp_path: Path) -> None:
    for name, text in (
        ("level", "2\n"),
        ("size", "1024K\n"),
        ("ways_of_associativity", "8\n"),
        ("coherency_line_size", "64\n"),
    ):
        (tmp_path / name).write_text(text)
    assert instructions.second_level_cache(tmp_path) == "1048576,8,64"
    (tmp_path / "ways_of_associativity").write_text("10\n")  # 1638.4 sets
    with pytest.raises(SystemExit, match="cannot simulate"):
        instructions.second_level_cache(tmp_path)
    (tmp_path / "ways_of_associativity").write_text("0\n")
    with pytest.raises(SystemExit, match="cannot simulate"):
        instructions.second_level_cache(tmp_path)
    (tmp_path / "ways_of_associativity").write_text("8\n")
    (tmp_path / "size").write_text("\u00b2K\n")  # a digit to isdigit(), not to int()
    with pytest.raises(SystemExit, match="not a second-level cache"):
        instructions.second_level_cache(tmp_path)
    (tmp_path / "size").write_text("1024K\n")
    (tmp_path / "level").write_text("3\n")  # a third-level cache is not asked for
    with pytest.raises(SystemExit, match="not a second-level cache"):
        instructions.second_level_cache(tmp_path)
    (tmp_path / "ways_of_associativity").unlink()
    with pytest.raises(SystemExit, match="cannot read the second-level cache"):
        instructions.second_level_cache(tmp_path)
