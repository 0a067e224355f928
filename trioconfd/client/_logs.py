"""Log lines that could come once per datagram, summarised: one per kind per interval."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeAlias

from ..protocol import ConfdArgumentError, ConfdArgumentTypeError
from ..protocol._numbers import as_number, shown

#: Where the client logs: a logger, or an adapter of one.
LoggerLike: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"

#: Seconds between two log lines of one kind (a discard reason, a slow callback).
DEFAULT_LOG_INTERVAL = 10.0


def check_log_interval(value: object) -> float:
    """``value`` as seconds between summary lines; 0 logs every line."""
    rule = "a finite number of seconds >= 0"
    seconds = as_number("log_interval", value, rule)
    if not 0 <= seconds < math.inf:  # NaN fails both
        raise ConfdArgumentError(f"log_interval must be {rule}, not {shown(value)}")
    return seconds


def check_logger(logger: object) -> None:
    """Refuse what is not a :class:`logging.Logger`, or an adapter (however nested)
    of one: a logger's name, say, would fail at the first line logged, in the
    receive task."""
    wrapped, seen = logger, set()
    while isinstance(wrapped, logging.LoggerAdapter) and id(wrapped) not in seen:
        seen.add(id(wrapped))  # (an adapter of itself is no logger)
        wrapped = wrapped.logger
    if not isinstance(wrapped, logging.Logger):
        raise ConfdArgumentTypeError(
            f"logger must be a logging.Logger (logging.getLogger(name)), not {shown(logger)}"
        )


class LogSummary:
    """At most one line per kind per ``interval``; the next line says how many it left out.

    The first line of a kind is logged at once. Lines of that kind in the
    ``interval`` seconds after it are only counted; the first one after the
    interval is logged with that count, and :meth:`flush` (when the client
    closes) logs the counts still pending. An interval of 0 logs every line.
    A logger not enabled for a line's level costs one cached check.
    """

    __slots__ = ("_clock", "_interval", "_logger", "_next", "_skipped")

    def __init__(
        self,
        logger: LoggerLike,
        interval: float = DEFAULT_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}  # per kind: when its next line may be logged
        self._skipped: dict[str, tuple[int, int]] = {}  # per kind: (level, lines left out)

    def log(self, kind: str, level: int, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log ``message % args`` unless a line of ``kind`` was logged under ``interval`` ago."""
        if not self._logger.isEnabledFor(level):
            return
        if self._interval > 0:
            now = self._clock()
            if now < self._next.get(kind, -math.inf):
                skipped = self._skipped.get(kind, (level, 0))[1]
                self._skipped[kind] = (level, skipped + 1)
                return
            self._next[kind] = now + self._interval
            left_out = self._skipped.pop(kind, None)
            if left_out is not None:
                message += " (and %d more %s since the last such line)"
                args = (*args, left_out[1], kind)
        self._logger.log(level, message, *args, exc_info=exc_info)

    def flush(self) -> None:
        """Log the counts of lines left out and not yet reported."""
        for kind, (level, count) in self._skipped.items():
            self._logger.log(level, "%d more %s in the last %g s", count, kind, self._interval)
        self._skipped.clear()
        self._next.clear()
