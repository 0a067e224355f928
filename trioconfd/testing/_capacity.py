"""A simulated peer's capacity: how fast it serves requests, and how many wait (sans-IO)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..protocol import ConfdArgumentError


@dataclass(frozen=True, slots=True)
class Capacity:
    """A peer that serves ``rate`` requests a second, one at a time, and holds at
    most ``queue`` waiting to be served: more are dropped, as a full kernel
    socket buffer drops them. Give it to :func:`open_simulated_cluster` (or
    :meth:`SimulatedCluster.set_capacity`) to test a client under overload.
    """

    rate: float
    queue: int = 256

    def __post_init__(self) -> None:
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            raise ConfdArgumentError(f"rate must be a positive, finite number, not {rate!r}")
        queue = self.queue
        if isinstance(queue, bool) or not isinstance(queue, int) or queue < 1:
            raise ConfdArgumentError(f"queue must be a positive integer, not {queue!r}")


@dataclass
class ServiceStats:
    """What a peer's capacity did: requests served, and dropped because its queue was full."""

    served: int = 0
    overflowed: int = 0


class ServiceQueue:
    """One peer's queue: when each arriving request is served, or that it is dropped."""

    __slots__ = ("_busy_until", "capacity", "stats")

    def __init__(self, capacity: Capacity, stats: ServiceStats) -> None:
        self.capacity = capacity
        self.stats = stats
        self._busy_until = -math.inf

    def served_at(self, arrival: float) -> float | None:
        """When a request arriving at ``arrival`` has been served; None: dropped (queue full)."""
        capacity = self.capacity
        service = 1.0 / capacity.rate
        busy_until = self._busy_until
        # Requests still waiting at ``arrival``: the backlog's length in services.
        if (busy_until - arrival) / service > capacity.queue:
            self.stats.overflowed += 1
            return None
        self._busy_until = done = max(busy_until, arrival) + service
        self.stats.served += 1
        return done
