"""Checking what a caller passes: timeouts, requests, and coverage (which peers to ask)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..protocol import (
    DEFAULT_COVERAGE,
    EXPIRE_TIMEOUT,
    Address,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdRequest,
    Query,
    RequestType,
    RetryPolicy,
)
from ..protocol._messages import new_request
from ..protocol._numbers import as_number, shown

_TIMEOUT = "a number of seconds >= 0 (math.inf: no limit)"


def check_timeout(timeout: float | None) -> float:
    """``timeout`` in seconds: None is :data:`EXPIRE_TIMEOUT`, ``math.inf`` never ends."""
    if timeout is None:
        return EXPIRE_TIMEOUT
    # (A float as it is: this runs once a query.)
    seconds = timeout if type(timeout) is float else as_number("timeout", timeout, _TIMEOUT)
    if not seconds >= 0:  # NaN too
        raise ConfdArgumentError(f"timeout must be {_TIMEOUT}, not {shown(timeout)}")
    return seconds


def as_retry(retry: object) -> RetryPolicy:
    """``retry``, if it is a :class:`RetryPolicy`."""
    if not isinstance(retry, RetryPolicy):
        raise ConfdArgumentTypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
    return retry


def as_request(type_or_request: ConfdRequest | RequestType | int, query: Query) -> ConfdRequest:
    """A :class:`ConfdRequest` given whole, or made from a type and a query."""
    if isinstance(type_or_request, ConfdRequest):
        if query is not None:
            raise ConfdArgumentError("give a query either inside the ConfdRequest or beside a type")
        return type_or_request
    return new_request(type_or_request, query)


def check_coverage(coverage: int, known: int) -> int:
    """How many of ``known`` peers ``coverage`` asks: 0 is min(known, 6), -1 all, N exactly N."""
    if isinstance(coverage, bool) or not isinstance(coverage, int):
        raise ConfdArgumentTypeError(f"coverage must be an integer, not {shown(coverage)}")
    if coverage == 0:
        return min(known, DEFAULT_COVERAGE)
    if coverage == -1:
        return known
    if coverage < -1:
        raise ConfdArgumentError(f"coverage must be -1, 0 or a peer count, not {shown(coverage)}")
    if coverage > known:
        raise ConfdArgumentError(
            f"coverage {shown(coverage)} asks for more peers than the {known} known"
        )
    return coverage


def choose_targets(
    peers: tuple[Address, ...], coverage: int, rng: random.Random
) -> Sequence[Address]:
    """The peers to ask: coverage 0 is min(peers, 6), -1 all, N exactly N (a random sample).

    Everyone asked is ``peers`` itself (immutable: a query holds no copy of its own).
    """
    if type(coverage) is int and (
        coverage == -1 or (coverage == 0 and len(peers) <= DEFAULT_COVERAGE)
    ):
        return peers  # everyone is asked (checked without a call: this runs once a query)
    count = check_coverage(coverage, len(peers))
    if count == len(peers):
        return peers  # everyone is asked: nothing to draw
    return rng.sample(peers, count)
