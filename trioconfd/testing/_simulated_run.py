"""A simulated cluster and a client, open in a Trio run of their own, in a helper thread.

The simulation runs on a ``MockClock`` with autojump while a call is in
progress, so a synchronous caller (a Hypothesis state machine's rule) can
run minutes of retransmissions and deadlines in milliseconds.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

from ..client import ConfdClient, open_confd_client
from ..protocol import QuorumRule, RetryPolicy
from ._simulated import SimulatedCluster, open_simulated_cluster

T = TypeVar("T")

# The generator Trio's scheduler orders each batch of tasks with (private;
# seeded for each call, see SimulatedRun._in_simulated_time).
_trio_scheduler_random: random.Random = trio._core._run._r


def tasks_below(task: trio.lowlevel.Task) -> int:
    return sum(1 + tasks_below(child) for n in task.child_nurseries for child in n.child_tasks)


class SimulatedRun:
    """A Trio run in a thread, holding a simulated cluster and a client open for the rules."""

    def __init__(
        self,
        configs: list[dict[str, Any]],
        key: bytes,
        *,
        seed: int,
        quorum: QuorumRule,
        retry: RetryPolicy,
    ) -> None:
        self._configs, self._key, self._seed = configs, key, seed
        self._quorum, self._retry = quorum, retry
        self._calls = 0
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop: trio.Event | None = None
        # Time jumps only while a rule runs: an idle run with autojump on would
        # keep waking to look for deadlines, and take the GIL from the machine.
        self._clock = trio.testing.MockClock()
        self.cluster: SimulatedCluster
        self.client: ConfdClient
        self.token: trio.lowlevel.TrioToken
        self._thread = threading.Thread(target=self._run, name="simulated cluster", daemon=True)
        self._thread.start()
        self._ready.wait()
        self._raise_failure()

    def _run(self) -> None:
        try:
            trio.run(self._main, clock=self._clock)
        except BaseException as exc:  # handed to the machine's thread
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with (
            open_simulated_cluster(self._configs, self._key, seed=self._seed) as cluster,
            open_confd_client(
                self._key,
                cluster.peers,
                port=cluster.port,
                quorum=self._quorum,
                retry=self._retry,
                rng=random.Random(self._seed),
            ) as client,
        ):
            self.cluster, self.client = cluster, client
            self.token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _in_simulated_time(self, async_fn: Callable[[], Awaitable[T]]) -> T:
        # The same calls must play out the same way, or Hypothesis calls the
        # test flaky and cannot replay or shrink it. Under Hypothesis, Trio
        # orders each batch of tasks from one seeded random generator, but a
        # call from the caller's thread can land in a batch that still holds
        # the last call's final step, or not, as the threads race; a batch of
        # another size draws other numbers. So each call starts from a seed
        # of its own.
        self._calls += 1
        _trio_scheduler_random.seed(f"{self._seed}:{self._calls}")
        self._clock.autojump_threshold = 0
        try:
            return await async_fn()
        finally:
            self._clock.autojump_threshold = math.inf
            # What the call set off at this instant (replies on their way, the
            # receive tasks routing them) is done before the caller goes on.
            await trio.testing.wait_all_tasks_blocked()

    def call(self, async_fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``async_fn`` in the simulation, time jumping as it waits; return its result."""
        self._raise_failure()
        try:
            return trio.from_thread.run(self._in_simulated_time, async_fn, trio_token=self.token)
        except trio.RunFinishedError:
            self._thread.join()
            self._raise_failure()
            raise

    def close(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join()
        self._raise_failure()
