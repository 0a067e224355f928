"""A confd cluster on a simulated network: crash, partition, reconfigure, inject faults."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from .._tasks import background_tasks
from ..client import check_port
from ..protocol import ConfdArgumentError, ConfdArgumentTypeError, KeyLike
from ._capacity import Capacity
from ._faults import Faults, check_faults
from ._server import ConfdServer, ConfigSource, open_confd_server
from ._simnet import Endpoint, LinkStats, SimulatedNetwork


def peer_host(index: int) -> str:
    """The simulated address of peer ``index`` (never sent to: nothing leaves the simulation)."""
    return f"127.0.1.{index + 1}"


class SimulatedCluster:
    """The cluster yielded by :func:`open_simulated_cluster`."""

    def __init__(self, network: SimulatedNetwork, servers: list[ConfdServer], port: int) -> None:
        self.network = network
        self._servers = servers
        self.port = port
        #: The peers' (address, port) pairs, in the order of the configs.
        self.peers: list[Endpoint] = [server.address for server in servers]
        self._crashed: set[int] = set()
        self._reachable = set(range(len(servers)))

    def __repr__(self) -> str:
        up = len(self.peers) - len(self._crashed)
        serials = sorted({server.serial for server in self._servers})
        return (
            f"<SimulatedCluster peers={len(self.peers)} port={self.port} up={up}"
            f" reachable={len(self._reachable)} serials={serials} seed={self.network.seed}>"
        )

    def _index(self, index: int) -> int:
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < len(self.peers)
        ):
            raise ConfdArgumentError(f"no peer {index!r}: the cluster has {len(self.peers)}")
        return index

    def _update(self, index: int) -> None:
        link = self.network.link(self.peers[index])
        link.up = index not in self._crashed and index in self._reachable

    def crash(self, index: int) -> None:
        """Peer ``index`` receives and answers nothing until :meth:`restart`."""
        self._crashed.add(self._index(index))
        self._update(index)

    def restart(self, index: int) -> None:
        """Peer ``index`` answers again."""
        self._crashed.discard(self._index(index))
        self._update(index)

    def partition(self, reachable: Sequence[int]) -> None:
        """Only the peers in ``reachable`` can be reached, until :meth:`heal`."""
        self._reachable = {self._index(index) for index in reachable}
        for index in range(len(self.peers)):
            self._update(index)

    def heal(self) -> None:
        """Every peer can be reached again (crashed ones stay down)."""
        self.partition(range(len(self.peers)))

    def set_config(self, index: int, config: ConfigSource) -> None:
        """Peer ``index`` serves ``config`` from now on (a newer serial, say)."""
        self._servers[self._index(index)].set_config(config)

    def set_faults(
        self, index: int, *, to_server: Faults | None = None, to_client: Faults | None = None
    ) -> None:
        """Change the faults of the link to peer ``index`` (None: leave that way as it is)."""
        link = self.network.link(self.peers[self._index(index)])
        if to_server is not None:
            link.to_server.faults = check_faults(to_server, "to_server")
        if to_client is not None:
            link.to_client.faults = check_faults(to_client, "to_client")

    def set_capacity(self, index: int, capacity: Capacity | None) -> None:
        """Peer ``index`` serves requests at ``capacity`` from now on (None: unbounded)."""
        self.network.set_capacity(self.peers[self._index(index)], capacity)

    def serial(self, index: int) -> int:
        """The cluster serial peer ``index`` serves."""
        return self._servers[self._index(index)].serial

    def stats(self, index: int) -> dict[str, Any]:
        """Counters of peer ``index``: its link's, and what its server answered and dropped."""
        link: LinkStats = self.network.link(self.peers[self._index(index)]).stats
        server = self._servers[index].stats
        return {
            "to_server": link.to_server,
            "to_client": link.to_client,
            "lost_while_down": link.lost_while_down,
            "served": link.service.served,
            "overflowed": link.service.overflowed,
            "answered": server.answered,
            "dropped": server.dropped,
        }


@asynccontextmanager
async def open_simulated_cluster(
    configs: Sequence[ConfigSource],
    hmac_key: KeyLike,
    *,
    seed: int = 0,
    to_server: Faults | None = None,
    to_client: Faults | None = None,
    port: int = 1814,
    latency: float = 0.0002,
    capacity: Capacity | None = None,
) -> AsyncIterator[SimulatedCluster]:
    """A confd peer per config on a simulated network, for the current ``trio.run``.

    While the block runs, every ``trio.socket`` of this run is a simulated
    one, so the unmodified :func:`~trioconfd.open_confd_client` and
    :func:`~trioconfd.query` talk to the simulated peers at
    ``cluster.peers``. The peers answer with the in-process server's engine,
    as :func:`open_confd_server` does. ``to_server`` and ``to_client`` are the
    faults of every peer's link; each is drawn from a generator seeded from
    ``seed``, per link and direction. Use it with
    ``trio.testing.MockClock(autojump_threshold=0)`` to run minutes of
    retransmissions and deadlines in milliseconds. ``capacity`` (a
    :class:`Capacity`) makes every peer serve requests at a rate, dropping
    what does not fit in its queue: a cluster that can be overloaded.
    """
    if isinstance(configs, Mapping | str | bytes | os.PathLike):
        raise ConfdArgumentTypeError(
            "configs must be a list of configurations (one a peer), "
            f"not one {type(configs).__name__}"
        )
    if not configs:
        raise ConfdArgumentError("a simulated cluster needs at least one config")
    port = check_port(port)
    network = SimulatedNetwork(seed, latency=latency)
    network.default_to_server = (
        Faults() if to_server is None else check_faults(to_server, "to_server")
    )
    network.default_to_client = (
        Faults() if to_client is None else check_faults(to_client, "to_client")
    )
    previous = trio.socket.set_custom_socket_factory(network)
    try:
        async with background_tasks() as nursery, AsyncExitStack() as stack:
            nursery.start_soon(network.run)
            servers = []
            for index, config in enumerate(configs):
                server = await stack.enter_async_context(
                    open_confd_server(config, hmac_key, host=peer_host(index), port=port)
                )
                network.link(server.address)  # its faults apply from the first datagram
                network.set_capacity(server.address, capacity)
                servers.append(server)
            yield SimulatedCluster(network, servers, port)
    finally:
        trio.socket.set_custom_socket_factory(previous)
