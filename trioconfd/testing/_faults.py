"""What faults do to one datagram, decided by a seeded generator (no I/O).

The fault proxy and the simulated network share these decisions, so a
``Faults`` means the same thing in front of a real daemon and in simulation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..protocol import ConfdArgumentError, ConfdArgumentTypeError
from ..protocol._numbers import as_number


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfdArgumentError(f"{name} must be a probability from 0 to 1, not {value!r}")


@dataclass(frozen=True)
class Faults:
    """What happens to datagrams going one way; each rate is a probability per datagram.

    ``delay`` holds a datagram for a time drawn from ``delay_range`` seconds;
    ``reorder`` holds it until the next datagram has gone (or ``hold_limit``
    seconds pass); ``corrupt`` flips one random byte.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    corrupt: float = 0.0
    delay_range: tuple[float, float] = (0.0, 0.05)
    hold_limit: float = 0.05

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "delay", "corrupt"):
            _check_rate(name, getattr(self, name))
        if not isinstance(self.delay_range, tuple | list) or len(self.delay_range) != 2:
            raise ConfdArgumentTypeError(
                f"delay_range must be a (low, high) pair of seconds, not {self.delay_range!r}"
            )
        rule = "0 <= low <= high, in seconds"
        low = as_number("delay_range's low", self.delay_range[0], rule)
        high = as_number("delay_range's high", self.delay_range[1], rule)
        if not 0 <= low <= high or not math.isfinite(high):
            raise ConfdArgumentError(
                f"delay_range must be 0 <= low <= high, not {self.delay_range}"
            )
        hold_limit = as_number("hold_limit", self.hold_limit, "a positive number of seconds")
        if not 0 < hold_limit < math.inf:
            raise ConfdArgumentError(f"hold_limit must be positive, not {self.hold_limit}")


def check_faults(value: object, what: str) -> Faults:
    """``value``, if it is a :class:`Faults`; else an error naming ``what``."""
    if not isinstance(value, Faults):
        raise ConfdArgumentTypeError(f"{what} must be a Faults, not {value!r}")
    return value


@dataclass
class DirectionStats:
    """What was done to the datagrams going one way."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    corrupted: int = 0
    #: to a client's upstream socket from another address than the server's:
    #: not relayed (a forged reply would pass for the server's)
    strays: int = 0


@dataclass(frozen=True, slots=True)
class Fate:
    """What becomes of one datagram: sent ``copies`` times (0: dropped) after ``delay``."""

    datagram: bytes
    copies: int
    delay: float | None  # None: at once
    held: bool  # held back until the next datagram goes (reordering)


def decide(
    faults: Faults, rng: random.Random, datagram: bytes, stats: DirectionStats, *, can_hold: bool
) -> Fate:
    """Draw the fate of ``datagram`` and count it in ``stats``.

    ``can_hold`` is False while another datagram is held back already (then a
    datagram drawn for reordering goes on as usual). Every draw is made
    whatever the rates, so one seed gives one sequence of fates whatever the
    faults are changed to along the way.
    """
    stats.received += 1
    dropped = rng.random() < faults.drop
    duplicated = rng.random() < faults.duplicate
    corrupted = rng.random() < faults.corrupt
    reordered = rng.random() < faults.reorder
    delayed = rng.random() < faults.delay
    delay = rng.uniform(*faults.delay_range)
    position = rng.randrange(max(1, len(datagram)))
    flip = rng.randrange(1, 256)
    if dropped:
        stats.dropped += 1
        return Fate(datagram, 0, None, held=False)
    if corrupted and datagram:
        stats.corrupted += 1
        mutable = bytearray(datagram)
        mutable[position] ^= flip
        datagram = bytes(mutable)
    copies = 2 if duplicated else 1
    if reordered and can_hold:
        # Held back, it goes once (a duplicate drawn with it is not made).
        stats.reordered += 1
        return Fate(datagram, 1, None, held=True)
    stats.duplicated += copies - 1
    if delayed:
        stats.delayed += 1
        return Fate(datagram, copies, delay, held=False)
    return Fate(datagram, copies, None, held=False)
