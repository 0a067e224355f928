"""Callback helpers with the behaviour of Ganeti's ``ganeti.confd.client`` ones.

For code ported from Ganeti's callback style; new code rarely needs them,
since :meth:`~trioconfd.ConfdClient.query` returns the verdict directly.
Each helper is a callable taking an :class:`~trioconfd.Upcall`, to pass as
``callback=`` to :func:`~trioconfd.open_confd_client`.
"""

from __future__ import annotations

import logging
from typing import Any

from .client import Callback, Upcall
from .protocol import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdReply,
    UpcallType,
)


def _check_callable(callback: object) -> None:
    if not callable(callback):
        raise ConfdArgumentTypeError(f"callback must be callable, not {type(callback).__name__}")


class FilterCallback:
    """Pass on only replies that tell something new (Ganeti's ``ConfdFilterCallback``).

    The first reply to a request passes; a later one passes only if it has a
    higher serial and a different answer. Replies with an older or equal
    serial are filtered; two replies with the same serial but different
    answers mark the request inconsistent in :attr:`consistent` (by salt).
    Expiry upcalls pass and forget the request.
    """

    def __init__(self, callback: Callback, logger: logging.Logger | None = None) -> None:
        _check_callable(callback)
        self._callback = callback
        self._logger = logger
        self._answers: dict[str, ConfdReply] = {}
        #: salt → False once two replies with one serial disagreed.
        self.consistent: dict[str, bool] = {}

    def _filtered(self, upcall: Upcall) -> bool:
        reply = upcall.server_reply
        assert reply is not None
        salt = upcall.salt
        self.consistent.setdefault(salt, True)
        previous = self._answers.get(salt)
        if previous is None:
            self._answers[salt] = reply
            return False
        if reply.serial > previous.serial:
            self._answers[salt] = reply
            return bool(reply.answer == previous.answer)  # newer, but nothing new
        if reply.serial == previous.serial and reply.answer != previous.answer:
            self.consistent[salt] = False
            if self._logger is not None:
                self._logger.warning(
                    "incoherent answers for query %s at serial %d", salt, reply.serial
                )
        return True

    def __call__(self, upcall: Upcall) -> None:
        if upcall.type is UpcallType.REPLY:
            if self._filtered(upcall):
                return
        else:
            self._answers.pop(upcall.salt, None)
            self.consistent.pop(upcall.salt, None)
        self._callback(upcall)


class CountingCallback:
    """Count replies per registered request, and pass every upcall on.

    Ganeti's ``ConfdCountingCallback``.
    """

    def __init__(self, callback: Callback, logger: logging.Logger | None = None) -> None:
        _check_callable(callback)
        self._callback = callback
        self._logger = logger
        self._answers: dict[str, int] = {}

    def register_query(self, salt: str) -> None:
        """Start counting replies to the request with rsalt ``salt``."""
        if salt in self._answers:
            raise ConfdArgumentError(f"query {salt!r} is registered already")
        self._answers[salt] = 0

    def all_answered(self) -> bool:
        """Whether every registered request has at least one reply."""
        return all(self._answers.values())

    def __call__(self, upcall: Upcall) -> None:
        if upcall.type is UpcallType.REPLY:
            if upcall.salt in self._answers:
                self._answers[upcall.salt] += 1
        else:
            self._answers.pop(upcall.salt, None)
        self._callback(upcall)


class StoreResultCallback:
    """Keep the latest reply upcall per request (Ganeti's ``StoreResultCallback``)."""

    _NO_ANSWER: tuple[bool, Any] = (False, None)

    def __init__(self) -> None:
        self._answers: dict[str, tuple[bool, Any]] = {}

    def get_response(self, salt: str) -> tuple[bool, Upcall | None]:
        """``(True, upcall)`` for the latest reply to request ``salt``, else ``(False, None)``."""
        return self._answers.get(salt, self._NO_ANSWER)

    def __call__(self, upcall: Upcall) -> None:
        if upcall.type is UpcallType.REPLY:
            self._answers[upcall.salt] = (True, upcall)
        elif self._answers.get(upcall.salt) == self._NO_ANSWER:
            del self._answers[upcall.salt]
