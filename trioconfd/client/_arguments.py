"""Checking what a caller passes: timeouts, requests, and coverage (which peers to ask)."""

from __future__ import annotations

import random

from ..protocol import (
    DEFAULT_COVERAGE,
    EXPIRE_TIMEOUT,
    Address,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdRequest,
    Query,
    RequestType,
)
from ..protocol._messages import new_request


def check_timeout(timeout: float | None) -> float:
    """``timeout`` in seconds: None is :data:`EXPIRE_TIMEOUT`, ``math.inf`` never ends."""
    if timeout is None:
        return EXPIRE_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ConfdArgumentError(
            f"timeout must be a number of seconds >= 0 (math.inf: no limit), not {timeout!r}"
        )
    return float(timeout)


def as_request(type_or_request: ConfdRequest | RequestType | int, query: Query) -> ConfdRequest:
    """A :class:`ConfdRequest` given whole, or made from a type and a query."""
    if isinstance(type_or_request, ConfdRequest):
        if query is not None:
            raise ConfdArgumentError("give a query either inside the ConfdRequest or beside a type")
        return type_or_request
    return new_request(type_or_request, query)


def choose_targets(peers: list[Address], coverage: int, rng: random.Random) -> list[Address]:
    """The peers to ask: coverage 0 is min(peers, 6), -1 all, N exactly N (a random sample)."""
    if isinstance(coverage, bool) or not isinstance(coverage, int):
        raise ConfdArgumentTypeError(f"coverage must be an integer, not {coverage!r}")
    known = len(peers)
    if coverage == 0:
        coverage = min(known, DEFAULT_COVERAGE)
    elif coverage == -1:
        coverage = known
    elif coverage < -1:
        raise ConfdArgumentError(f"coverage must be -1, 0 or a peer count, not {coverage}")
    if coverage > known:
        raise ConfdArgumentError(f"coverage {coverage} asks for more peers than the {known} known")
    if coverage == known:
        return list(peers)  # everyone is asked: nothing to draw
    return rng.sample(peers, coverage)
