"""JSON pointers (RFC 6901) as ganeti-confd reads them, quirks included."""

from __future__ import annotations

from typing import Any

from ._haskell import as_haskell_int


def _pointer_tokens(pointer: str) -> list[str]:
    """The daemon's reading of a JSON pointer: its tokens, up to where it stops.

    A token runs to the next ``/``; ``~0`` is ``~`` and ``~1`` is ``/``. The
    daemon stops reading, and ignores the rest, at a ``~`` that escapes
    nothing (keeping the token so far) and at an empty token that is not the
    last (``//``); an empty last token (a trailing ``/``) is kept.
    """
    tokens: list[str] = []
    position, end = 0, len(pointer)
    while position < end and pointer[position] == "/":
        position += 1
        token: list[str] = []
        while position < end and pointer[position] != "/":
            char = pointer[position]
            if char == "~":
                escaped = pointer[position + 1 : position + 2]
                if escaped not in ("0", "1"):
                    break
                token.append("~" if escaped == "0" else "/")
                position += 2
            else:
                token.append(char)
                position += 1
        if token:
            tokens.append("".join(token))
        elif position == end:
            tokens.append("")
        else:
            break
        if position < end and pointer[position] == "~":
            break
    return tokens


def _array_index(token: str) -> int:
    """The daemon's index for ``token``: its leading decimal digits, in 64 bits."""
    digits = len(token) - len(token.lstrip("0123456789"))
    if not digits or not token[:digits].isascii():
        raise KeyError(token)
    return as_haskell_int(int(token[:digits]))


def json_pointer(document: Any, pointer: str) -> Any:
    """The value at ``pointer``, read as the daemon reads it; KeyError when not there."""
    tokens = _pointer_tokens(pointer)
    if not tokens:
        raise KeyError(pointer)
    value = document
    for token in tokens:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and 0 <= _array_index(token) < len(value):
            value = value[_array_index(token)]
        else:
            raise KeyError(token)
    return value
