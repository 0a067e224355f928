"""Several in-process confd servers on loopback, as one cluster's master candidates."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from ..protocol import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdError,
    KeyLike,
    format_address,
)
from ._ganeti import free_udp_port
from ._server import ConfdServer, ConfigSource, answers_for, load_config, open_confd_server

# Ports tried before giving up: a free port on 127.0.0.1 is rarely taken on
# 127.0.0.2 and .3, but it can be.
_PORT_ATTEMPTS = 20


class ConfdCluster:
    """In-process confd servers on 127.0.0.1, .2, .3 … sharing one port, like a cluster's."""

    def __init__(self, servers: list[ConfdServer], key: bytes, port: int) -> None:
        self.servers = servers
        #: The cluster's HMAC key.
        self.key = key
        #: The port every server listens on (as every daemon of a cluster does).
        self.port = port
        #: The servers' (IP, port) pairs: pass them as ``peers``.
        self.peers: list[tuple[str, int]] = [server.address for server in servers]

    def __repr__(self) -> str:
        return (
            f"<ConfdCluster {', '.join(format_address(peer) for peer in self.peers)}"
            f" serials={sorted({server.serial for server in self.servers})}>"
        )

    @property
    def serial(self) -> int:
        """The highest configuration serial served."""
        return max(server.serial for server in self.servers)

    def set_config(self, config: ConfigSource, servers: Sequence[int] | None = None) -> None:
        """Serve ``config`` from now on, on every server or on those with the indexes given."""
        chosen = range(len(self.servers)) if servers is None else servers
        for index in chosen:
            if isinstance(index, bool) or not isinstance(index, int):
                raise ConfdArgumentTypeError(f"server indexes are integers, not {index!r}")
            if not 0 <= index < len(self.servers):
                raise ConfdArgumentError(f"no server {index}: the cluster has {len(self.servers)}")
        for index in chosen:
            self.servers[index].set_config(config)


@asynccontextmanager
async def open_confd_cluster(
    config: ConfigSource | Sequence[ConfigSource],
    hmac_key: KeyLike | None = None,
    *,
    size: int = 3,
) -> AsyncIterator[ConfdCluster]:
    """Run ``size`` in-process confd servers on 127.0.0.1, .2, … at one free port.

    ``config`` is served by every server, or, as a list, one config per
    server (then ``size`` is its length). ``hmac_key`` defaults to a fresh
    random key, as ``cluster.key``.
    """
    configs: list[Any]
    if isinstance(config, list | tuple):
        configs = list(config)
    else:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 254:
            raise ConfdArgumentError(f"size must be an integer from 1 to 254, not {size!r}")
        configs = [config] * size
    if not configs:
        raise ConfdArgumentError("a cluster needs at least one config")
    # Read (and indexed, as each server will) now, so that a bad config is
    # its own error, not a bind that "failed" twenty times.
    configs = [load_config(one) for one in configs]
    for one in configs:
        answers_for(one)
    if hmac_key is None:
        key = secrets.token_hex(20).encode() + b"\n"
    elif isinstance(hmac_key, bytes | str):
        key = hmac_key.encode() if isinstance(hmac_key, str) else hmac_key
    else:
        raise ConfdArgumentTypeError(
            "hmac_key must be bytes or str here, so that tests can read it"
        )
    last_error: ConfdError | None = None
    for _ in range(_PORT_ATTEMPTS):
        port = free_udp_port()
        async with AsyncExitStack() as stack:
            try:
                servers = [
                    await stack.enter_async_context(
                        open_confd_server(one, key, host=f"127.0.0.{index + 1}", port=port)
                    )
                    for index, one in enumerate(configs)
                ]
            except ConfdError as exc:  # the configs are read: the port was taken
                last_error = exc
                continue
            yield ConfdCluster(servers, key, port)
            return
    raise ConfdError(f"no port was free on 127.0.0.1 to .{len(configs)}: {last_error}")
