from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from trioconfd.testing import (
    GanetiConfd,
    GanetiConfdError,
    find_ganeti_confd,
    make_cluster_config,
    open_ganeti_confd,
)

# "default": quick enough for every run; "fuzz": the long nox session.
settings.register_profile("default", max_examples=150, deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("TRIOCONFD_FUZZ_EXAMPLES", "100000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: Set in CI: interop tests must run, so a missing or broken daemon fails them.
REQUIRE_GANETI = os.environ.get("TRIOCONFD_REQUIRE_GANETI", "") not in ("", "0")


def _unavailable(reason: str) -> None:
    if REQUIRE_GANETI:
        pytest.fail(f"{reason} (TRIOCONFD_REQUIRE_GANETI is set)")
    pytest.skip(reason)


@pytest.fixture
def ganeti_confd_binary() -> str:
    binary = find_ganeti_confd()
    if binary is None:
        _unavailable(
            "the real ganeti-confd was not found: install Debian's ganeti-haskell-3.0 "
            "or set TRIOCONFD_GANETI_CONFD"
        )
    assert binary is not None
    return binary


@dataclass
class Cluster:
    """Real daemons serving one generated cluster, all with one key."""

    key: bytes
    config: dict[str, Any]
    daemons: list[GanetiConfd]
    stack: AsyncExitStack
    binary: str
    root: Path

    @property
    def peers(self) -> list[tuple[str, int]]:
        return [daemon.address for daemon in self.daemons]

    async def start(self, config: dict[str, Any], key: bytes, name: str) -> GanetiConfd:
        try:
            return await self.stack.enter_async_context(
                open_ganeti_confd(config, key, self.root / name, binary=self.binary)
            )
        except GanetiConfdError as exc:
            _unavailable(f"the real ganeti-confd could not be started: {exc}")
            raise


def write_key_file(directory: Path, key: bytes) -> Path:
    """An ``hmac.key`` in ``directory``, readable by its owner only (no warning)."""
    path = directory / "hmac.key"
    path.write_bytes(key)
    path.chmod(0o600)
    return path


#: A trailing newline is part of the key, as in a real hmac.key file.
CLUSTER_KEY = b"interop test key\n"


def interop_config(serial: int = 100) -> dict[str, Any]:
    return make_cluster_config(
        nodes=6,
        master_candidates=3,
        offline=1,
        drained=1,
        instances=6,
        links=("br0", "br1"),
        serial=serial,
        node_serial=7,
        instance_serial=9,
    )


@pytest.fixture
async def ganeti_cluster(ganeti_confd_binary: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Three real ganeti-confd daemons on loopback serving :func:`interop_config`."""
    config = interop_config()
    async with AsyncExitStack() as stack:
        cluster = Cluster(CLUSTER_KEY, config, [], stack, ganeti_confd_binary, tmp_path)
        for index in range(3):
            cluster.daemons.append(await cluster.start(config, CLUSTER_KEY, f"node{index}"))
        yield cluster
