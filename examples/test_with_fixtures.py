"""Tests of code that asks confd, with trioconfd's pytest fixtures.

The fixtures come with trioconfd: nothing to import. They are async, so
these tests need pytest-trio with ``trio_mode = true`` in the pytest
configuration (``[tool.pytest.ini_options]`` in pyproject.toml, or
pytest.ini); without it, mark each test ``@pytest.mark.trio``.
"""

from __future__ import annotations

from typing import Any

import pytest

import trioconfd
from trioconfd import requests
from trioconfd.testing import ConfdCluster, SimulatedCluster, fail_over, make_cluster_config


async def find_master(key: bytes, peers: list[tuple[str, int]]) -> tuple[str, int]:
    """The code under test: the cluster master's name, and the serial it was read at."""
    result = await trioconfd.query(key, peers, requests.cluster_master(), coverage=-1)
    if not result.ok or result.serial is None:
        raise RuntimeError(result.verdict)
    return result.answer, result.serial


@pytest.fixture
def confd_config() -> dict[str, Any]:
    # Overrides the plugin's default: this module's cluster has four nodes.
    return make_cluster_config(nodes=4, serial=10)


async def test_finds_the_master(confd_cluster: ConfdCluster) -> None:
    assert len(confd_cluster.peers) == 3  # on 127.0.0.1, .2 and .3
    assert {port for _, port in confd_cluster.peers} == {confd_cluster.port}
    assert await find_master(confd_cluster.key, confd_cluster.peers) == (
        "node1.example.com",
        10,
    )


async def test_a_quorum_always_sees_the_newest_config(confd_cluster: ConfdCluster) -> None:
    newer = fail_over(make_cluster_config(nodes=4, serial=10), 2)  # node2, serial 11
    confd_cluster.set_config(newer, servers=[0, 1])  # the third server lags behind
    assert await find_master(confd_cluster.key, confd_cluster.peers) == (
        "node2.example.com",
        11,
    )


async def test_survives_a_crash_in_simulated_time(
    simulated_confd_cluster: SimulatedCluster, confd_key: bytes, autojump_clock: Any
) -> None:
    simulated_confd_cluster.crash(2)
    assert await find_master(confd_key, simulated_confd_cluster.peers) == (
        "node1.example.com",
        10,
    )
    simulated_confd_cluster.crash(1)  # two of three down: no quorum, a verdict at the deadline
    with pytest.raises(RuntimeError, match="timed out: 1 of 3 peers replied, 2 needed"):
        await find_master(confd_key, simulated_confd_cluster.peers)
