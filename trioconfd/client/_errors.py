"""The client's own errors, each also the Trio error a Trio user expects."""

from __future__ import annotations

import trio

from ..protocol import ConfdClientError


class ConfdClientClosedError(ConfdClientError, trio.ClosedResourceError):
    """The client is closed: its ``async with`` block has exited or its receive task stopped."""


class ConfdClientBrokenError(ConfdClientError, trio.BrokenResourceError):
    """The client broke: its receive task stopped, for the reason the message gives
    (and ``__cause__``, when an exception stopped it)."""


class ConfdRequestEndedError(ConfdClientError, trio.ClosedResourceError):
    """A stream read after its request ended: its ``async with`` block has exited."""
