"""The chaos matrix: real ganeti-confd daemons behind fault-injecting proxies."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio

from trioconfd import QueryResult, RequestType, open_confd_client
from trioconfd.testing import Faults, open_fault_proxy

from .conftest import CLUSTER_KEY, Cluster

pytestmark = pytest.mark.interop

DEADLINE = 3.0
QUERIES = 30

CASES = {
    "loss 10%": (Faults(drop=0.1), True),
    "loss 30%": (Faults(drop=0.3), True),
    "loss 50%": (Faults(drop=0.5), False),
    "duplication": (Faults(duplicate=0.5), True),
    "reordering": (Faults(reorder=0.5), True),
    "delay": (Faults(delay=1.0, delay_range=(0.0, 0.2)), True),
    "everything": (
        Faults(drop=0.2, duplicate=0.2, reorder=0.2, delay=0.3, corrupt=0.1),
        True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_chaos(ganeti_cluster: Cluster, case: str) -> None:
    faults, must_all_succeed = CASES[case]
    async with AsyncExitStack() as stack:
        proxies = [
            await stack.enter_async_context(
                open_fault_proxy(daemon.address, to_server=faults, to_client=faults, seed=index)
            )
            for index, daemon in enumerate(ganeti_cluster.daemons)
        ]
        peers = [proxy.address for proxy in proxies]
        async with open_confd_client(CLUSTER_KEY, peers) as client:
            results: list[tuple[QueryResult, float]] = []

            async def one_query() -> None:
                start = trio.current_time()
                result = await client.query(
                    RequestType.CLUSTER_MASTER, coverage=-1, timeout=DEADLINE
                )
                results.append((result, trio.current_time() - start))

            async with trio.open_nursery() as nursery:
                for _ in range(QUERIES):
                    nursery.start_soon(one_query)

            assert len(results) == QUERIES
            for result, elapsed in results:
                # A verdict by the deadline, whatever happened on the wire.
                assert elapsed <= DEADLINE + 0.5, (case, elapsed)
                assert result.timed_out == (not result.quorum_reached)
                # At most one count per peer, and only peers that were asked.
                addresses = [reply.address for reply in result.replies]
                assert len(set(addresses)) == len(addresses) <= result.sent == 3
                assert set(addresses) <= set(peers)
                # Whatever arrived is the truth, never a corrupted or stale answer.
                for reply in result.replies:
                    assert (reply.reply.answer, reply.reply.serial) == ("node1.example.com", 100)
            succeeded = sum(result.quorum_reached for result, _ in results)
            if must_all_succeed:
                assert succeeded == QUERIES, [r.verdict for r, _ in results if r.timed_out]
            else:
                assert succeeded > 0
            assert client.outstanding == 0
