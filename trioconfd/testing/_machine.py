"""A Hypothesis state machine: a real client against a simulated cluster, under faults.

The simulation runs in a ``trio.run`` of its own, on a ``MockClock`` with
autojump, in a helper thread; each rule of the machine calls into it with
``trio.from_thread`` and waits for the outcome, so minutes of retransmissions
and deadlines pass in milliseconds and Hypothesis can shrink a failing
schedule step by step.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import trio
import trio.testing
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ..protocol import QueryResult, QuorumRule, RequestType, RetryPolicy, needed_replies
from ._config import make_cluster_config
from ._faults import Faults
from ._simulated_run import SimulatedRun, tasks_below

T = TypeVar("T")

#: How far past its deadline a query may end on the mock clock: a rounding error.
_ROUNDING = 1e-9
_FAULT_RATES = st.sampled_from([0.0, 0.0, 0.1, 0.3, 0.6])


@functools.cache
def version_config(version: int) -> dict[str, Any]:
    """The configuration of one version: its serial and its master's name both say which."""
    return make_cluster_config(serial=version, domain=f"v{version}.example.com")


@dataclass(frozen=True)
class _Draws:
    """The strategies a machine of one size draws from, made once (building them is slow)."""

    peer: st.SearchStrategy[int]
    peers: st.SearchStrategy[frozenset[int]]
    some_peers: st.SearchStrategy[frozenset[int]]
    versions: st.SearchStrategy[list[int]]


class _LastPeers:
    """The last ``k`` of the peers: the last to answer when all are up."""

    def __init__(self, peer_count: int) -> None:
        self.peer_count = peer_count

    def __call__(self, count: int) -> frozenset[int]:
        return frozenset(range(self.peer_count - count, self.peer_count))


@functools.cache
def _draws(peer_count: int) -> _Draws:
    peer = st.integers(0, peer_count - 1)

    def peer_sets(min_size: int) -> st.SearchStrategy[frozenset[int]]:
        # Often a suffix of the peers, which is where a stale minority hides best.
        last = st.integers(min_size, peer_count).map(_LastPeers(peer_count))
        return st.one_of(last, st.frozensets(peer, min_size=min_size))

    versions = st.lists(st.integers(1, 3), min_size=peer_count, max_size=peer_count)
    return _Draws(peer, peer_sets(0), peer_sets(1), versions)


def _master_of(version: int) -> str:
    return f"node1.v{version}.example.com"


class ClientStateMachine(RuleBasedStateMachine):
    """Queries, crashes, partitions, new configs and faults; the quorum claims after each.

    Checked after every step, for every query:

    1. within a query, once reached the quorum stays reached, and the
       trusted serial never goes down as replies arrive (streamed queries);
    2. if a strict majority of the peers hold serial >= S, an all-peer query
       that reaches its quorum trusts serial >= S;
    3. every reply counted came from a peer asked, once per peer, with an
       answer that peer's configuration gives;
    4. every query ends by its deadline, and leaves no table entry and no
       task behind; ``sent``, ``received``, ``timed_out`` and ``verdict``
       agree.

    Subclass it to check your own quorum rule (override :meth:`quorum`) or
    ``retry`` policy, or use :func:`check_client`.
    """

    peer_count: ClassVar[int] = 5
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    key: ClassVar[bytes] = b"state machine key\n"
    seed: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self._versions = [1] * self.peer_count
        self._newest = 1
        self._crashed: set[int] = set()
        self._run = SimulatedRun(
            [version_config(1)] * self.peer_count,
            self.key,
            seed=self.seed,
            quorum=self.quorum,
            retry=self.retry,
        )
        self._baseline_tasks = self._run.call(self._count_tasks)

    def teardown(self) -> None:
        self._run.close()

    def quorum(self, peers: int) -> int:
        """The quorum rule under test (override it to check your own)."""
        return needed_replies(peers)

    # -- helpers -----------------------------------------------------------------

    async def _count_tasks(self) -> int:
        root = trio.lowlevel.current_root_task()
        assert root is not None
        return tasks_below(root)

    def _majority_serial(self) -> int:
        """The highest S that a strict majority of the peers hold serial >= S of."""
        return sorted(self._versions, reverse=True)[self.peer_count // 2]

    def _check_result(self, result: QueryResult, overshoot: float, *, all_peers: bool) -> None:
        # overshoot: when the query ended, less its deadline (start + timeout, as
        # summed). The mock clock's jumps are sums of floats: one may land a
        # rounding error past the deadline it jumps to (seen: 7e-18 s).
        assert overshoot <= _ROUNDING, f"the query ended {overshoot:g} s past its deadline"
        addresses = [reply.address for reply in result.replies]
        assert len(set(addresses)) == len(addresses), f"a peer counted twice: {addresses}"
        peers = self._run.cluster.peers
        assert set(addresses) <= set(peers), f"a reply from no peer: {addresses}"
        assert result.received <= result.sent <= self.peer_count
        for reply in result.replies:
            served = reply.reply.serial
            assert served in self._served_versions(), f"serial {served} was never served"
            assert reply.reply.answer == _master_of(served), (
                f"{reply.address} answered {reply.reply.answer!r} with serial {served}"
            )
        assert result.quorum_reached == (result.received >= result.needed)
        assert result.verdict.startswith("quorum reached") == result.quorum_reached
        if result.replies:
            best = max(reply.reply.serial for reply in result.replies)
            assert result.serial == best, f"trusted serial {result.serial}, newest {best}"
        if all_peers and result.quorum_reached:
            floor = self._majority_serial()
            assert result.serial is not None
            assert result.serial >= floor, (
                f"a majority holds serial >= {floor}, but the quorum trusted {result.serial}"
            )

    def _served_versions(self) -> range:
        return range(1, self._newest + 1)

    # -- the start ---------------------------------------------------------------

    @initialize(data=st.data())
    def configs(self, data: st.DataObject) -> None:
        """Each peer starts with one of three versions: stale and fresh peers from the outset."""
        versions = data.draw(_draws(self.peer_count).versions, label="versions")
        self._newest = max(versions)
        for index, version in enumerate(versions):
            if version != 1:
                self._run.cluster.set_config(index, version_config(version))
        self._versions = versions

    # -- queries -----------------------------------------------------------------

    @rule(
        coverage=st.sampled_from([-1, 0, 1, 2]),
        timeout=st.sampled_from([0.05, 0.3, 1.0, 3.0]),
    )
    def query(self, coverage: int, timeout: float) -> None:
        client = self._run.client

        async def ask() -> tuple[QueryResult, float]:
            start = trio.current_time()
            result = await client.query(
                RequestType.CLUSTER_MASTER, coverage=coverage, timeout=timeout
            )
            return result, trio.current_time() - (start + timeout)

        result, overshoot = self._run.call(ask)
        everyone = coverage in (-1, self.peer_count) or (coverage == 0 and self.peer_count <= 6)
        self._check_result(result, overshoot, all_peers=everyone)
        assert result.timed_out == (not result.quorum_reached)

    @rule(timeout=st.sampled_from([0.3, 1.0, 3.0]))
    def streamed_query(self, timeout: float) -> None:
        client = self._run.client

        async def ask() -> tuple[list[QueryResult], QueryResult, float]:
            start = trio.current_time()
            seen = []
            async with client.request(
                RequestType.CLUSTER_MASTER, coverage=-1, timeout=timeout
            ) as replies:
                async for _ in replies:
                    seen.append(replies.result())
            return seen, replies.result(), trio.current_time() - (start + timeout)

        seen, final, overshoot = self._run.call(ask)
        self._check_result(final, overshoot, all_peers=True)
        reached = False
        serial = -math.inf
        for partial in seen:
            assert partial.quorum_reached or not reached, "the quorum was reached, then lost"
            reached = partial.quorum_reached
            assert partial.serial is not None
            assert partial.serial >= serial, f"the trusted serial went down to {partial.serial}"
            serial = partial.serial

    @rule(count=st.integers(min_value=2, max_value=6), timeout=st.sampled_from([0.3, 1.0]))
    def concurrent_queries(self, count: int, timeout: float) -> None:
        client = self._run.client

        async def ask_all() -> list[tuple[QueryResult, float]]:
            results: list[tuple[QueryResult, float]] = []

            async def one() -> None:
                start = trio.current_time()
                result = await client.query(
                    RequestType.CLUSTER_MASTER, coverage=-1, timeout=timeout
                )
                results.append((result, trio.current_time() - (start + timeout)))

            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(one)
            return results

        for result, overshoot in self._run.call(ask_all):
            self._check_result(result, overshoot, all_peers=True)

    # -- the cluster -------------------------------------------------------------

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        index = data.draw(_draws(self.peer_count).peer, label="peer")
        self._run.cluster.crash(index)
        self._crashed.add(index)

    @precondition(lambda self: bool(self._crashed))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        index = data.draw(st.sampled_from(sorted(self._crashed)), label="peer")
        self._run.cluster.restart(index)
        self._crashed.discard(index)

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        reachable = data.draw(_draws(self.peer_count).peers, label="reachable")
        self._run.cluster.partition(sorted(reachable))

    @rule()
    def heal(self) -> None:
        self._run.cluster.heal()

    @rule(data=st.data())
    def newer_config(self, data: st.DataObject) -> None:
        peers = data.draw(_draws(self.peer_count).some_peers, label="peers")
        self._newest += 1
        config = version_config(self._newest)
        for index in sorted(peers):
            self._run.cluster.set_config(index, config)
            self._versions[index] = self._newest

    @rule(
        drop=_FAULT_RATES,
        duplicate=_FAULT_RATES,
        reorder=_FAULT_RATES,
        delay=_FAULT_RATES,
        corrupt=_FAULT_RATES,
    )
    def faults(
        self, drop: float, duplicate: float, reorder: float, delay: float, corrupt: float
    ) -> None:
        faults = Faults(
            drop=drop, duplicate=duplicate, reorder=reorder, corrupt=corrupt, delay=delay
        )
        for index in range(self.peer_count):
            self._run.cluster.set_faults(index, to_server=faults, to_client=faults)

    # -- after every step --------------------------------------------------------

    @invariant()
    def nothing_left_behind(self) -> None:
        assert self._run.client.outstanding == 0, "a finished query left its table entry"
        tasks = self._run.call(self._count_tasks)
        assert tasks == self._baseline_tasks, f"{tasks - self._baseline_tasks} tasks left behind"


def check_client(
    *,
    quorum: QuorumRule = needed_replies,
    retry: RetryPolicy | None = None,
    peers: int = 5,
    max_examples: int = 50,
    steps: int = 20,
    seed: int = 0,
    derandomize: bool = False,
) -> None:
    """Run :class:`ClientStateMachine` with this quorum rule and retry policy.

    Raises AssertionError, with the shortest failing schedule Hypothesis
    found in its notes, if any claim breaks. ``steps`` is the most rules one
    run applies; ``derandomize`` makes the search the same every time.
    """
    machine = type(
        "CheckedClient",
        (ClientStateMachine,),
        {
            "quorum": lambda self, peers: quorum(peers),
            "retry": retry or RetryPolicy(),
            "peer_count": peers,
            "seed": seed,
        },
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=derandomize,
            database=None if derandomize else settings().database,
            suppress_health_check=[HealthCheck.too_slow],
            # Hypothesis's "explain" phase reruns the failure under coverage: slow, and
            # the shrunk schedule already says what happened.
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        ),
    )
