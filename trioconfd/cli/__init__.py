"""The ``trioconfd`` command: the 12 queries, ``serve``, ``bench`` and ``demo``."""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
