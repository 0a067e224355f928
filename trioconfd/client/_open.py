"""Opening a client: its ``trio.socket`` UDP socket, its nursery, its receive task."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from .._tasks import background_tasks
from .._udp import ask_for_a_large_receive_buffer
from ..protocol import (
    AdmissionPolicy,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientError,
    ConfdRequest,
    KeyLike,
    Query,
    QueryResult,
    QuorumRule,
    RequestType,
    RetryPolicy,
    as_hmac_key,
    needed_replies,
)
from ..protocol._numbers import shown
from ._arguments import as_retry
from ._client import ConfdClient
from ._logs import DEFAULT_LOG_INTERVAL, LoggerLike, check_log_interval, check_logger
from ._node import node_hmac_key, node_master_candidate_ips
from ._peers import (
    LocalAddress,
    PeerSpec,
    check_port,
    default_port,
    parse_local_address,
    resolve_peers,
)
from ._router import RECEIVE_TASKS, Router
from ._upcalls import Callback, check_callback

_LOGGER = logging.getLogger("trioconfd")

#: How many requests may be outstanding at once by default.
DEFAULT_MAX_OUTSTANDING = 65536


def _check_max_outstanding(value: int) -> int:
    wrong = f"max_outstanding must be a positive integer, not {shown(value)}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfdArgumentTypeError(wrong)
    if value < 1:
        raise ConfdArgumentError(wrong)
    return value


@asynccontextmanager
async def open_confd_client(
    hmac_key: KeyLike | None = None,
    peers: Iterable[PeerSpec] | None = None,
    *,
    port: int | None = None,
    callback: Callback | None = None,
    logger: LoggerLike | None = None,
    quorum: QuorumRule = needed_replies,
    retry: RetryPolicy | None = None,
    admission: AdmissionPolicy | None = None,
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
    rng: random.Random | None = None,
    log_interval: float = DEFAULT_LOG_INTERVAL,
    local_address: LocalAddress | None = None,
) -> AsyncIterator[ConfdClient]:
    """Open a confd client for the duration of an ``async with`` block.

    ``peers`` are IP addresses or host names, (address, port) pairs, or
    ``"HOST:PORT"`` and ``"[IPv6]:PORT"`` strings, all of one address
    family; ``port`` (default: the ``ganeti-confd`` service, else 1814)
    applies to those without one. Host names are resolved once, here,
    through Trio (see :func:`resolve_peers`). Left out, the key and the peers
    are read from the Ganeti node this runs on (``hmac.key`` and
    ``ssconf_master_candidates_ips``). ``callback`` receives an
    :class:`Upcall` per accepted reply and per expired request.
    ``retry`` is how queries ask silent peers again (default
    :class:`RetryPolicy()`; ``RetryPolicy.off()`` sends once). ``admission``
    is how many requests each peer may have in flight at once (default
    :class:`AdmissionPolicy()`, a window that adapts to what the peer
    answers; ``AdmissionPolicy.off()``: no bound); queries past it wait in the
    client, their deadlines running. At most ``max_outstanding`` requests,
    sent or waiting, are held at once. ``rng`` draws each request's sample
    of peers (a seeded :class:`random.Random` repeats them). Discarded datagrams are
    counted in ``client.stats`` and logged at debug level, at most one line
    per reason every ``log_interval`` seconds (0: every one).
    ``local_address`` (an IP of the peers' family, optionally with a port)
    is where the socket is bound, and so the source of every request: on a
    multihomed node, the address the daemons expect. Default: the wildcard
    address and any free port.

    The client's ``trio.socket`` UDP socket and its receive task live in its
    own nursery and end with the block. From then on every call raises
    :class:`ConfdClientClosedError`, and so does a query still in flight.
    """
    # The node's files: a pipe or FIFO that has given nothing yet (its writer
    # silent) holds up this call, which a cancel scope can end, never the loop.
    key = as_hmac_key(await node_hmac_key() if hmac_key is None else hmac_key)
    if peers is None:
        peers = await node_master_candidate_ips()
    port = default_port() if port is None else check_port(port)
    if callback is not None:
        check_callback(callback)
    if retry is not None:
        as_retry(retry)
    if logger is not None:
        check_logger(logger)
    if rng is not None and not isinstance(rng, random.Random):
        raise ConfdArgumentTypeError(f"rng must be a random.Random, not {shown(rng)}")
    if admission is not None and not isinstance(admission, AdmissionPolicy):
        raise ConfdArgumentTypeError(
            f"admission must be an AdmissionPolicy, not {type(admission).__name__}"
        )
    max_outstanding = _check_max_outstanding(max_outstanding)
    log_interval = check_log_interval(log_interval)
    family, addresses = await resolve_peers(peers, port)
    bind_to = parse_local_address(local_address, family)
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        ask_for_a_large_receive_buffer(sock)
        try:
            await sock.bind(bind_to)
        except OSError as exc:
            raise ConfdClientError(
                f"cannot bind the client's socket to {bind_to[0]} port {bind_to[1]}: "
                f"{exc.strerror or exc}"
            ) from None
        router = Router(
            sock,
            key,
            logger or _LOGGER,
            max_outstanding,
            log_interval,
            admission=admission or AdmissionPolicy(),
        )
        async with background_tasks() as nursery:
            client = ConfdClient(
                router,
                nursery,
                family,
                addresses,
                port,
                callback=callback,
                quorum=quorum,
                retry=retry or RetryPolicy(),
                rng=rng or random.Random(),
            )
            for _ in range(RECEIVE_TASKS):
                nursery.start_soon(router.receive_loop)
            try:
                yield client
            finally:
                router.close("its async with block has exited")


async def query(
    hmac_key: KeyLike,
    peers: Iterable[PeerSpec],
    type: ConfdRequest | RequestType | int,
    query: Query = None,
    *,
    port: int | None = None,
    coverage: int = 0,
    timeout: float | None = None,
    quorum: QuorumRule = needed_replies,
    retry: RetryPolicy | None = None,
    local_address: LocalAddress | None = None,
) -> QueryResult:
    """Open a client, ask one question, close it: the one-shot form of :meth:`ConfdClient.query`."""
    async with open_confd_client(
        hmac_key, peers, port=port, quorum=quorum, retry=retry, local_address=local_address
    ) as client:
        return await client.query(type, query, coverage=coverage, timeout=timeout)
