"""The exception hierarchy."""

from __future__ import annotations


class ConfdError(Exception):
    """Base class of every error trioconfd raises on purpose."""


class ConfdClientError(ConfdError):
    """A request or a client was used or configured wrongly."""


class ConfdArgumentError(ConfdClientError, ValueError):
    """An argument has a value trioconfd cannot use (also a ``ValueError``)."""


class ConfdArgumentTypeError(ConfdArgumentError, TypeError):
    """An argument is of a type trioconfd cannot use (also a ``TypeError``)."""


class ConfdProtocolError(ConfdError):
    """A datagram is not an acceptable confd message."""


class ConfdMalformedError(ConfdProtocolError):
    """A datagram is malformed: wrong magic, size, encoding, JSON or fields."""


class ConfdSignatureError(ConfdProtocolError):
    """A datagram cannot be authenticated: missing, wrong or stale signature."""


class ConfdUnknownSaltError(ConfdProtocolError):
    """A reply's salt names no request awaited: dropped on its envelope, unauthenticated."""

    def __init__(self, salt: str) -> None:
        super().__init__(salt[:80])  # not authenticated: any length
        #: the salt it came with (not authenticated)
        self.salt = salt

    def __str__(self) -> str:  # worded only if asked: most are counted, unread
        return f"no request awaited has the salt {self.salt[:80]!r}"
