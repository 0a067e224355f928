"""Which request messages the daemon decodes (and answers) and which it drops.

These rules were read off Debian's ganeti-confd 3.0.2: numbers are rounded
half to even (``1.0`` and ``0.5`` are integers to it) and wrap at 64 bits,
however many digits they have; a string (the rsalt, and a dict query's
link, IP and IPs) may be a list of one-character strings; the four keys are the
only ones allowed, ``query`` may be missing (null), ``rsalt`` may be empty,
and a dict query may hold only the four :class:`QueryKey` keys with values of
the right kind (null counts as absent). Anything else is dropped unanswered.
"""

from __future__ import annotations

import math
from typing import Any

from ._constants import MasterField, QueryKey, RequestType
from ._errors import ConfdMalformedError
from ._messages import ConfdRequest, Query
from ._numbers import shown

_REQUEST_KEYS = frozenset({"protocol", "type", "query", "rsalt"})
_TYPES = {int(t): t for t in RequestType}
_FIELDS = {int(f) for f in MasterField}


def _whole_number(value: object, what: str) -> int:
    """A JSON number as the daemon reads an Int: rounded half to even, in 64 bits.

    A number too large for a double (``1e400``) is infinite, which it rounds to 0.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfdMalformedError(f"{what} is {shown(value)}, not a number")
    if isinstance(value, float):
        if math.isnan(value):
            raise ConfdMalformedError(f"{what} is NaN, not a number")
        if math.isinf(value):
            return 0
        value = round(value)
    # An integer of any length (400 digits, say) wraps as the daemon's does.
    return (value + 2**63) % 2**64 - 2**63


def _haskell_string(value: object) -> str | None:
    """``value`` as the daemon reads a String: a string, or a list of one-character
    strings (``["b", "r", "0"]`` is ``"br0"``, ``[]`` is ``""``); else None."""
    if isinstance(value, str):
        return value
    # One character each, as the daemon counts them: an astral character
    # comes as a surrogate pair, two characters to it.
    if isinstance(value, list) and all(
        isinstance(c, str) and len(c) == 1 and c <= "\uffff" for c in value
    ):
        return "".join(value)
    return None


def _rsalt(value: object) -> str:
    """The rsalt as the daemon reads a String."""
    text = _haskell_string(value)
    if text is None:
        raise ConfdMalformedError(f"the rsalt is {shown(value)}, not a string")
    return text


def _optional_string(query: dict[str, Any], key: QueryKey) -> str | None:
    value = query.get(key.value)
    if value is None:
        return None
    text = _haskell_string(value)
    if text is None:
        raise ConfdMalformedError(f"query key {key.value!r} holds {shown(value)}, not a string")
    return text


def _string_list(query: dict[str, Any], key: QueryKey) -> list[str]:
    value = query.get(key.value)
    if value is None:
        return []
    texts = [_haskell_string(item) for item in value] if isinstance(value, list) else [None]
    if any(text is None for text in texts):
        raise ConfdMalformedError(
            f"query key {key.value!r} holds {shown(value)}, not a list of strings"
        )
    return [text for text in texts if text is not None]


def decode_query(query: Any) -> Query:
    """The query in canonical form (null keys dropped, fields as integers), or an error."""
    if query is None or isinstance(query, str):
        return query
    if not isinstance(query, dict):
        raise ConfdMalformedError(f"the query is a JSON {type(query).__name__}")
    unknown = set(query) - {key.value for key in QueryKey}
    if unknown:
        raise ConfdMalformedError(f"the query has unknown keys {sorted(unknown)}")
    canonical: dict[str, Any] = {}
    for key in (QueryKey.LINK, QueryKey.IP):
        value = _optional_string(query, key)
        if value is not None:
            canonical[key.value] = value
    ips = _string_list(query, QueryKey.IPLIST)
    if ips:
        canonical[QueryKey.IPLIST.value] = ips
    raw_fields = query.get(QueryKey.FIELDS.value)
    if raw_fields is not None:
        if not isinstance(raw_fields, list):
            raise ConfdMalformedError(f"query key '3' holds {shown(raw_fields)}, not a list")
        fields = [_whole_number(field, "a master field") for field in raw_fields]
        if any(field not in _FIELDS for field in fields):
            raise ConfdMalformedError(f"unknown master field in {shown(raw_fields)}")
        if fields:
            canonical[QueryKey.FIELDS.value] = fields
    return canonical


def decode_request(message: Any) -> ConfdRequest:
    """The request in a decoded message; :class:`ConfdMalformedError` if the daemon
    would drop it."""
    if not isinstance(message, dict):
        raise ConfdMalformedError("the request is not a JSON object")
    extra = set(message) - _REQUEST_KEYS
    if extra:
        raise ConfdMalformedError(f"the request has superfluous keys {sorted(extra)}")
    for key in ("protocol", "type", "rsalt"):
        if key not in message:
            raise ConfdMalformedError(f"the request has no {key!r}")
    request_type = _whole_number(message["type"], "the request type")
    if request_type not in _TYPES:
        raise ConfdMalformedError(f"unknown request type {request_type}")
    rsalt = _rsalt(message["rsalt"])
    return ConfdRequest(
        type=_TYPES[request_type],
        query=decode_query(message.get("query")),
        rsalt=rsalt,
        protocol=_whole_number(message["protocol"], "the protocol"),
    )
