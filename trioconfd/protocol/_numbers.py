"""Numbers a caller passes (seconds, counts, factors): their type, their size, and
how an error message shows them."""

from __future__ import annotations

from ._errors import ConfdArgumentError, ConfdArgumentTypeError

# Integers longer than this are shown by their length: Python refuses to
# write one of over 4,300 digits, and a message need not hold 60.
_LONGEST_SHOWN_BITS = 192


def shown(value: object) -> str:
    """``value`` for an error message, cut short: a datagram may hold megabytes, and
    an argument be an integer of a million digits."""
    if type(value) is int and value.bit_length() > _LONGEST_SHOWN_BITS:
        return f"an integer of {value.bit_length():,} bits"
    try:
        text = repr(value)
    except Exception:  # any object's own repr may fail (an adapter of a str)
        return f"a {type(value).__name__} whose repr fails"
    return text if len(text) <= 60 else f"{text[:57]}..."


def as_number(name: str, value: object, rule: str) -> float:
    """``value`` as a float, if it is a number (a bool is not); else an error saying
    that ``name`` must be ``rule`` (:class:`ConfdArgumentTypeError` for another
    type, :class:`ConfdArgumentError` for an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfdArgumentTypeError(f"{name} must be {rule}, not {shown(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ConfdArgumentError(
            f"{name} must be {rule}, not {shown(value)}, beyond a float's range"
        ) from None
