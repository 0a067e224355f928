"""trioconfd's pytest plugin: fixtures for confd clusters to test against.

Installed with trioconfd, it loads in every pytest run (entry point
``pytest11``): it defines fixtures and nothing else, no hooks, options or
side effects, so it does nothing until a test asks for a fixture.
They are async (run them with pytest-trio, e.g. ``trio_mode = true``):

- ``confd_cluster``: a :class:`~trioconfd.testing.ConfdCluster` of in-process
  servers on 127.0.0.1, .2, … at one port, with ``key``, ``peers``,
  ``port``, ``servers`` and ``set_config``.
- ``simulated_confd_cluster``: a :class:`~trioconfd.testing.SimulatedCluster`
  on a simulated network (add pytest-trio's ``autojump_clock`` fixture to run
  it in simulated time).

Both serve ``confd_config`` (default: ``make_cluster_config()``) with
``confd_key`` on ``confd_cluster_size`` peers (default 3); override those
fixtures in a ``conftest.py`` or a test module to change them.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ._cluster import ConfdCluster, open_confd_cluster
from ._config import make_cluster_config
from ._simulated import SimulatedCluster, open_simulated_cluster


@pytest.fixture
def confd_key() -> bytes:
    """A fresh random HMAC key, as a cluster's ``hmac.key`` holds one."""
    return secrets.token_hex(20).encode() + b"\n"


@pytest.fixture
def confd_config() -> dict[str, Any]:
    """The configuration the cluster fixtures serve: ``make_cluster_config()``."""
    return make_cluster_config()


@pytest.fixture
def confd_cluster_size() -> int:
    """How many servers the cluster fixtures run."""
    return 3


_NEEDS_TRIO = (
    "trioconfd's cluster fixtures are async: use them from an async test run by "
    "pytest-trio: set trio_mode = true in your pytest configuration (pytest.ini, "
    "or [tool.pytest.ini_options] in pyproject.toml), or mark the test @pytest.mark.trio"
)


def _trio_mode(config: pytest.Config) -> bool:
    try:
        return bool(config.getini("trio_mode"))
    except ValueError:  # pytest-trio is not installed: no such setting
        return False


@pytest.fixture
def _confd_needs_trio(request: pytest.FixtureRequest) -> None:
    """Stop a test that cannot run the async fixtures, in one line saying what to set
    (without it, pytest fails with a traceback from its own internals)."""
    node = request.node
    is_async = inspect.iscoroutinefunction(getattr(node, "function", None))
    trio_test = node.get_closest_marker("trio") is not None or _trio_mode(request.config)
    if not (is_async and trio_test):
        pytest.fail(_NEEDS_TRIO, pytrace=False)


@pytest.fixture
async def confd_cluster(
    confd_config: dict[str, Any],
    confd_key: bytes,
    confd_cluster_size: int,
    _confd_needs_trio: None,
) -> AsyncIterator[ConfdCluster]:
    """In-process confd servers on loopback, one port, answering as ganeti-confd does."""
    async with open_confd_cluster(confd_config, confd_key, size=confd_cluster_size) as cluster:
        yield cluster


@pytest.fixture
async def simulated_confd_cluster(
    confd_config: dict[str, Any],
    confd_key: bytes,
    confd_cluster_size: int,
    _confd_needs_trio: None,
) -> AsyncIterator[SimulatedCluster]:
    """Confd peers on a simulated network: crash, partition and fault them at will."""
    async with open_simulated_cluster([confd_config] * confd_cluster_size, confd_key) as cluster:
        yield cluster
