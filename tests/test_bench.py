"""trioconfd bench: latencies in fixed memory, progress, Ctrl-C, and its own usage."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioconfd.cli import _main as cli_main
from trioconfd.cli._histogram import LatencyHistogram
from trioconfd.cli._main import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from trioconfd.testing import ConfdServer, make_cluster_config, open_confd_server

from .conftest import write_key_file
from .responders import run_responders, silent
from .test_cli import LineReader, peer_args, run_cli

KEY = b"bench key\n"


@pytest.fixture
async def server() -> AsyncIterator[ConfdServer]:
    async with open_confd_server(make_cluster_config(), KEY) as server:
        yield server


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_file(tmp_path, KEY)


# -- the histogram -------------------------------------------------------------


@given(st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=300))
def test_percentiles_are_within_a_bucket_of_the_exact_ones(latencies: list[float]) -> None:
    histogram = LatencyHistogram()
    for latency in latencies:
        histogram.record(latency)
    ordered = sorted(latencies)
    assert histogram.count == len(latencies)
    assert (histogram.minimum, histogram.maximum) == (ordered[0], ordered[-1])
    assert math.isclose(histogram.mean, sum(latencies) / len(latencies), rel_tol=1e-9)
    for fraction in (0.0, 0.5, 0.9, 0.99, 1.0):
        exact = ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
        # 1 µs wide below 128 µs, 1/64 of the value above.
        assert abs(histogram.percentile(fraction) - exact) <= max(1e-6, exact / 64)


def test_an_empty_histogram_has_no_percentiles() -> None:
    assert math.isnan(LatencyHistogram().percentile(0.5))
    assert math.isnan(LatencyHistogram().mean)


def test_a_histogram_keeps_the_same_memory_for_any_count() -> None:
    rng = random.Random(7)
    histogram = LatencyHistogram()
    tracemalloc.start()
    try:
        # Warm up: counters past 256 become int objects of their own (28 bytes).
        for _ in range(100_000):
            histogram.record(rng.expovariate(1000))
        before = tracemalloc.take_snapshot()
        for _ in range(100_000):
            histogram.record(rng.expovariate(1000))
        histogram.record(10**9)  # far past the largest bucket: clamped, not grown
        grown = sum(
            stat.size_diff
            for stat in tracemalloc.take_snapshot().compare_to(before, "filename")
            if "_histogram.py" in (stat.traceback[0].filename if stat.traceback else "")
        )
    finally:
        tracemalloc.stop()
    assert histogram.count == 200_001
    # 100,000 latencies more: a list would grow by 800 KB at least; a few
    # more counters outgrowing small ints (28 bytes each) is all there is.
    assert grown < 16_384


# -- the command ---------------------------------------------------------------


async def test_progress_lines_with_rate_and_eta_when_not_on_a_terminal(
    server: ConfdServer, key_file: Path
) -> None:
    done = await run_cli(
        "bench", *peer_args([server]), "--key-file", str(key_file),
        "--requests", "1500", "--concurrency", "4", "--progress-interval", "0.02",
    )  # fmt: skip
    assert done.returncode == EXIT_OK, done.stderr
    lines = done.stderr.decode().splitlines()
    progress = [line for line in lines if line.startswith(("sequential: ", "concurrent: "))]
    assert progress, lines
    figures = progress[0].partition(": ")[2]
    count, rate, eta = figures.split("  ")
    assert int(count.split("/")[0]) > 0
    assert count.endswith("/1500")
    assert rate.endswith(" q/s")
    assert float(rate.split()[0].replace(",", "")) > 0
    assert eta.startswith("ETA ")
    assert eta.count(":") == 2


async def test_concurrency_above_requests_is_clamped_and_said(
    server: ConfdServer, key_file: Path
) -> None:
    done = await run_cli(
        "bench", *peer_args([server]), "--key-file", str(key_file),
        "--requests", "5", "--json",
    )  # fmt: skip
    assert done.returncode == EXIT_OK, done.stderr
    assert "--concurrency 64 is more than --requests 5: 5 in flight" in done.stderr.decode()
    assert set(json.loads(done.stdout)) == {"sequential", "5 in flight"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--requests", "0"], "argument --requests: 0 is less than 1"),
        (["--concurrency", "x"], "argument --concurrency: 'x' is not a number"),
        (["--progress-interval", "nan"], "argument --progress-interval: nan is less than"),
    ],
)
async def test_a_wrong_option_shows_benchs_usage(args: list[str], message: str) -> None:
    done = await run_cli("bench", *args)
    assert done.returncode == EXIT_USAGE
    stderr = done.stderr.decode()
    assert stderr.startswith("usage: trioconfd bench ")
    assert "--concurrency" in stderr  # bench's options, not the list of commands
    assert f"trioconfd bench: error: {message}" in stderr


async def test_ctrl_c_prints_the_figures_so_far_and_exits_130(
    server: ConfdServer, key_file: Path
) -> None:
    process = await trio.lowlevel.open_process(
        [
            sys.executable, "-m", "trioconfd", "bench", *peer_args([server]),
            "--key-file", str(key_file), "--requests", str(10**8),
            "--progress-interval", "0.05", "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        first = await LineReader(process.stderr).next()
        assert first.startswith("sequential: ")
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            output = b""
            while chunk := await process.stdout.receive_some():
                output += chunk
            assert await process.wait() == 130
    finally:
        process.kill()
    figures = json.loads(output)
    assert list(figures) == ["sequential"]  # the second phase never started
    assert figures["sequential"]["interrupted"] is True
    assert 0 < figures["sequential"]["queries"] < 10**8
    assert figures["sequential"]["p50_ms"] > 0


async def _bench_with_ctrl_c(
    server: ConfdServer, key_file: Path, delay: float | None
) -> tuple[int, bytes, str, float]:
    """A short bench run, Ctrl-C sent ``delay`` s after its first progress line.

    Returns the exit status, stdout, stderr and the seconds from that first
    line to the exit.
    """
    process = await trio.lowlevel.open_process(
        [
            sys.executable, "-m", "trioconfd", "bench", *peer_args([server]),
            "--key-file", str(key_file), "--requests", "300", "--concurrency", "16",
            "--progress-interval", "0.01", "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    out, err, progressing = bytearray(), bytearray(), trio.Event()

    async def read(stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
        assert stream is not None
        while chunk := await stream.receive_some():
            into += chunk
            if b"\n" in err:
                progressing.set()

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, process.stdout, out)
                nursery.start_soon(read, process.stderr, err)
                await progressing.wait()
                first_line_at = trio.current_time()
                if delay is not None:
                    await trio.sleep(delay)
                    process.send_signal(signal.SIGINT)  # a no-op once it has exited
            code = await process.wait()
    finally:
        process.kill()
    return code, bytes(out), err.decode(), trio.current_time() - first_line_at


async def test_ctrl_c_at_any_point_of_a_run_ends_it_without_a_traceback(
    server: ConfdServer, key_file: Path
) -> None:
    # A Ctrl-C as the run ends (its signal receiver closing) once came out
    # as a KeyboardInterrupt in an exception group: a traceback, and death
    # by SIGINT. Interrupt it all along the run, its end too.
    code, _, stderr, length = await _bench_with_ctrl_c(server, key_file, None)
    assert code == EXIT_OK, stderr
    codes = []
    for fraction in (0, 0.2, 0.5, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.3):
        code, stdout, stderr, _ = await _bench_with_ctrl_c(server, key_file, fraction * length)
        codes.append(code)
        # Once its figures are out, a Ctrl-C may find it exiting: killed by
        # SIGINT then, which a shell also reports as 130.
        assert code in {EXIT_OK, EXIT_INTERRUPTED, -signal.SIGINT}, (fraction, stderr)
        assert "Traceback" not in stderr
        assert "KeyboardInterrupt" not in stderr
        if stdout:
            figures = json.loads(stdout)  # whole, never cut off
            assert all(phase["queries"] > 0 for phase in figures.values())
        if code == EXIT_OK:
            assert list(json.loads(stdout)) == ["sequential", "16 in flight"]
    assert codes[0] == EXIT_INTERRUPTED  # the early ones did interrupt it


def _bench_two_queries_to_a_silent_peer(key_file: Path) -> int:
    """``trioconfd bench --json``, two queries a phase to a peer that never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent_peer:
        silent_peer.bind(("127.0.0.1", 0))
        return cli_main.main(
            [
                "bench", f"--peer=127.0.0.1:{silent_peer.getsockname()[1]}",
                "--key-file", str(key_file), "--requests", "2", "--concurrency", "2",
                "--timeout", "0.05", "--json",
            ]
        )  # fmt: skip


def test_a_ctrl_c_as_the_run_ends_is_an_interruption_not_a_traceback(
    key_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window the sweep above rarely hits, hit every time: SIGINT comes
    # as the Ctrl-C watcher is cancelled at the end of the run, and waits,
    # unread, in its signal receiver, which delivers it again on closing.
    # In the watcher's own task, that was a KeyboardInterrupt in a group.
    class CtrlCAsTheWatcherEnds(trio.abc.Instrument):
        steps = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task.name.endswith("._stop_on_ctrl_c"):
                self.steps += 1
                if self.steps == 2:  # its last: woken by the end of the run
                    signal.raise_signal(signal.SIGINT)

    instrument = CtrlCAsTheWatcherEnds()

    class TrioWithTheInstrument:
        def __getattr__(self, name: str) -> object:
            return getattr(trio, name)

        @staticmethod
        def run(function: Any, *args: Any) -> Any:
            return trio.run(function, *args, instruments=[instrument])

    monkeypatch.setattr(cli_main, "trio", TrioWithTheInstrument())
    code = _bench_two_queries_to_a_silent_peer(key_file)
    assert instrument.steps == 2
    captured = capsys.readouterr()
    assert code == EXIT_INTERRUPTED, captured.err
    assert set(json.loads(captured.out)) == {"sequential", "2 in flight"}  # printed first
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    "interruption",
    [
        KeyboardInterrupt(),
        BaseExceptionGroup("nursery", [KeyboardInterrupt()]),
        BaseExceptionGroup("nursery", [BaseExceptionGroup("inner", [KeyboardInterrupt()])]),
    ],
)
def test_ctrl_c_seen_by_any_task_is_exit_130(
    key_file: Path, interruption: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where a Ctrl-C lands decides its form: bare in the main task, in a
    # group from a nursery's task. Either way, 130 and no traceback.
    async def interrupted(*_: object) -> int:
        raise interruption

    monkeypatch.setattr(cli_main, "run_bench", interrupted)
    args = ["bench", "--peer=127.0.0.1:9", "--key-file", str(key_file)]
    assert cli_main.main(args) == EXIT_INTERRUPTED


def test_a_crash_beside_a_ctrl_c_is_not_hidden(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crashed(*_: object) -> int:
        raise BaseExceptionGroup("nursery", [KeyboardInterrupt(), RuntimeError("a bug")])

    monkeypatch.setattr(cli_main, "run_bench", crashed)
    with pytest.raises(BaseExceptionGroup) as raised:
        cli_main.main(["bench", "--peer=127.0.0.1:9", "--key-file", str(key_file)])
    assert raised.group_contains(RuntimeError, match="a bug")


async def test_a_bench_of_silent_peers_says_what_happened(key_file: Path) -> None:
    # Two bound sockets that never answer: no latency to show, and a cause to name.
    async with run_responders(2, KEY, silent) as responders:
        peers = [f"--peer=127.0.0.1:{r.address[1]}" for r in responders]
        args = ["bench", *peers, "--key-file", str(key_file), "--requests", "2"]
        args += ["--concurrency", "2", "--timeout", "0.2"]
        text = await run_cli(*args)
        as_json = await run_cli(*args, "--json")
    assert text.returncode == 3
    table = text.stdout.decode()
    assert "nan" not in table
    assert table.splitlines()[1].split()[-4:] == ["-", "-", "-", "-"]
    stderr = text.stderr.decode()
    assert "2 of 2 queries (sequential) got no quorum in time" in stderr
    assert "none of the 2 peers asked sent anything back" in stderr
    figures = json.loads(as_json.stdout)  # valid JSON: null, not NaN
    assert figures["sequential"]["p50_ms"] is None
    assert figures["sequential"]["timeouts"] == 2


def test_a_ctrl_c_as_a_phase_ends_leaves_the_next_one_out(
    key_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C as the first phase ends: the second began, and was cancelled
    # before any query ended; it was printed with 0 queries.
    from trioconfd.cli import _bench

    real_sequential = _bench.sequential

    async def sequential_then_ctrl_c(*args: Any) -> None:
        await real_sequential(*args)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(_bench, "sequential", sequential_then_ctrl_c)
    code = _bench_two_queries_to_a_silent_peer(key_file)
    captured = capsys.readouterr()
    assert code == EXIT_INTERRUPTED, captured.err
    figures = json.loads(captured.out)
    assert list(figures) == ["sequential"]
    assert figures["sequential"]["queries"] == 2
