"""What rejecting a datagram costs, however it is built, beside authenticating a valid one.

Every datagram that reaches the client's socket is read in one scheduler
round, so the costliest garbage an attacker can build bounds how long one
datagram can hold up every other task. It is timed here beside the cost of
checking the signature of a valid reply of the same size (as ganeti-confd
writes it, and with its envelope's members in another order, which is read
token by token as most garbage is), and beside what a general JSON parse
of the same garbage (as the client did before the envelope reader) costs::

    python -m benchmarks.garbage_costs [--count N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from tests.garbage import COSTLY_GARBAGE
from trioconfd import (
    MAGIC,
    ConfdProtocolError,
    ConfdReply,
    ConfdUnknownSaltError,
    HmacKey,
    ReplyStatus,
    unpack_reply,
)
from trioconfd.protocol import pack_reply
from trioconfd.protocol._wire import _load

_KEY = HmacKey(b"garbage benchmark key\n")
_WRONG_KEY = HmacKey(b"another key\n")

# A valid reply's envelope escapes two quotes per string in its message. The
# costliest envelope to read is one where every third byte is an escape:
# it passes the reader and fails the signature. So does a valid reply whose
# answer is a string of quotes (each costs two escapes), the fair yardstick.
_ESCAPES = MAGIC + b'{"hmac":"00","salt":"s","msg":"' + b'a\\"' * 19990 + b'"}'
# The same, but its last escape is bad: its envelope reads as one until the
# string scanner refuses it at its very end, before any signature check.
_BAD_LAST_ESCAPE = _ESCAPES[:-2] + b'\\x"}'


def _canonical_until_its_end(size: int) -> bytes:
    """``size`` bytes in ganeti-confd's own envelope layout, full of escapes, with
    one byte of junk after it: read whole in that layout, and refused at its
    last byte by the token reader, which goes on from there."""
    head = MAGIC + b'{"hmac":"' + b"0" * 40 + b'","msg":"'
    tail = b'","salt":"s"}x'
    room = size - len(head) - len(tail)
    return head + b'a\\"' * (room // 3) + b"a" * (room % 3) + tail


def _valid_reply(answer: Any) -> bytes:
    return pack_reply(ConfdReply(ReplyStatus.OK, answer, 1), "salt", _KEY)


def _in_another_order(datagram: bytes) -> bytes:
    """The same signed reply, its envelope's members in another order (msg, salt,
    hmac): valid, but not in ganeti-confd's own layout, so read token by token."""
    envelope = json.loads(datagram[len(MAGIC) :])
    reordered = {name: envelope[name] for name in ("msg", "salt", "hmac")}
    return MAGIC + json.dumps(reordered, separators=(",", ":")).encode("ascii")


def _per_call(count: int, call: Callable[[], object]) -> float:
    """µs per call, the best of three rounds."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


def _rejection(
    datagram: bytes,
    awaited: frozenset[str] | None = None,
    refused_as: type[ConfdProtocolError] = ConfdProtocolError,
) -> Callable[[], None]:
    def reject() -> None:
        try:
            unpack_reply(datagram, _KEY, awaited=awaited)
        except refused_as:
            return
        raise AssertionError(f"{datagram[:40]!r}... was not refused as {refused_as.__name__}")

    return reject


def _dropped_on_its_envelope(datagram: bytes) -> Callable[[], None]:
    """A reply read as the client reads one for no request in flight."""
    return _rejection(datagram, frozenset(), ConfdUnknownSaltError)


def _old_general_parse(datagram: bytes) -> Callable[[], None]:
    """What the client did first with any datagram: parse the envelope as general JSON."""

    def parse() -> None:
        with contextlib.suppress(ConfdProtocolError):
            _load(datagram[len(MAGIC) :], "the envelope")

    return parse


def measure_garbage_costs(count: int) -> dict[str, Any]:
    """µs per rejection of each kind of garbage, and the yardsticks."""
    plain = _valid_reply(["192.0.2.1"] * 4200)  # an IP list: ~60 KB, 8,400 escapes
    quotes = _valid_reply('"' * 14900)  # a string of quotes: ~60 KB, 29,800 escapes
    rows = {}
    for name, datagram in [
        *COSTLY_GARBAGE.items(),
        ("an envelope of escapes", _ESCAPES),
        ("escapes, the last one bad", _BAD_LAST_ESCAPE),
    ]:
        rows[name] = {
            "bytes": len(datagram),
            "rejected_us": _per_call(count, _rejection(datagram)),
            "general_parse_us": _per_call(max(1, count // 10), _old_general_parse(datagram)),
        }
    # The same shapes at the size of a short reply (24 IPs, ~460 bytes); and
    # garbage read whole in ganeti-confd's layout before it is refused.
    short = _valid_reply(["192.0.2.1"] * 24)
    short_any_order = _in_another_order(short)
    short_rows = {
        name: _per_call(count, _rejection(datagram[: len(short)]))
        for name, datagram in COSTLY_GARBAGE.items()
    }
    short_rows["canonical until its end"] = _per_call(
        count, _rejection(_canonical_until_its_end(len(short)))
    )
    return {
        "garbage": rows,
        "short_garbage_us": short_rows,
        "short_bytes": len(short),
        "authenticate_short_us": _per_call(
            count, lambda: _raises(lambda: unpack_reply(short, _WRONG_KEY))
        ),
        # The same reply, its envelope in another layout: read token by token.
        "authenticate_short_any_order_us": _per_call(
            count, lambda: _raises(lambda: unpack_reply(short_any_order, _WRONG_KEY))
        ),
        # A reply for no request in flight (late, or a made-up salt), as the
        # client reads it: dropped on its envelope.
        "late_short_us": _per_call(count, _dropped_on_its_envelope(short)),
        "accept_short_us": _per_call(count, lambda: unpack_reply(short, _KEY)),
        "hmac_sha1_60k_us": _per_call(count, lambda: _KEY.sign(plain)),
        "authenticate_ip_list_us": _per_call(
            count, lambda: _raises(lambda: unpack_reply(plain, _WRONG_KEY))
        ),
        "authenticate_quotes_us": _per_call(
            count, lambda: _raises(lambda: unpack_reply(quotes, _WRONG_KEY))
        ),
        "accept_ip_list_us": _per_call(count, lambda: unpack_reply(plain, _KEY)),
        "late_ip_list_us": _per_call(count, _dropped_on_its_envelope(plain)),
        "ip_list_bytes": len(plain),
        "quotes_bytes": len(quotes),
    }


def _raises(call: Callable[[], object]) -> None:
    try:
        call()
    except ConfdProtocolError:
        return
    raise AssertionError("a reply that must be refused was accepted")


def ratios(costs: dict[str, Any]) -> dict[str, float]:
    """The worst refusal before any signature check, and the worst overall, against yardsticks."""
    rows = costs["garbage"]
    unsigned = max(row["rejected_us"] for name, row in rows.items() if name in COSTLY_GARBAGE)
    return {
        "worst_shape_refusal_per_ip_list_authentication": unsigned
        / costs["authenticate_ip_list_us"],
        "worst_short_refusal_per_short_authentication": max(costs["short_garbage_us"].values())
        / costs["authenticate_short_us"],
        "worst_short_refusal_per_short_authentication_any_order": max(
            costs["short_garbage_us"].values()
        )
        / costs["authenticate_short_any_order_us"],
        "escapes_envelope_per_ip_list_authentication": max(
            rows[name]["rejected_us"]
            for name in ("an envelope of escapes", "escapes, the last one bad")
        )
        / costs["authenticate_ip_list_us"],
    }


def print_garbage_costs(costs: dict[str, Any]) -> None:
    print(f"{'rejecting garbage, µs per datagram':<40}{'bytes':>7}{'now':>9}{'general parse':>15}")
    for name, row in costs["garbage"].items():
        print(
            f"  {name:<38}{row['bytes']:>7}{row['rejected_us']:>9.1f}"
            f"{row['general_parse_us']:>15.1f}"
        )
    print(f"  {'yardsticks: HMAC-SHA1 of 60 KB':<38}{'':>7}{costs['hmac_sha1_60k_us']:>9.1f}")
    print(
        f"  {'authenticating an IP-list reply':<38}{costs['ip_list_bytes']:>7}"
        f"{costs['authenticate_ip_list_us']:>9.1f}"
    )
    print(
        f"  {'authenticating a reply of quotes':<38}{costs['quotes_bytes']:>7}"
        f"{costs['authenticate_quotes_us']:>9.1f}"
    )
    print(
        f"  {'accepting the IP-list reply (all)':<38}{costs['ip_list_bytes']:>7}"
        f"{costs['accept_ip_list_us']:>9.1f}"
    )
    print(
        f"  {'the IP-list reply, for no request':<38}{costs['ip_list_bytes']:>7}"
        f"{costs['late_ip_list_us']:>9.1f}"
    )
    size = costs["short_bytes"]
    print(f"the same shapes cut to a short reply's {size} bytes, µs per datagram")
    for name, cost in costs["short_garbage_us"].items():
        print(f"  {name:<38}{size:>7}{cost:>9.1f}")
    yardstick = "yardstick: authenticating that reply"
    print(f"  {yardstick:<38}{size:>7}{costs['authenticate_short_us']:>9.1f}")
    any_order = "  its members in another order"
    print(f"  {any_order:<38}{size:>7}{costs['authenticate_short_any_order_us']:>9.1f}")
    print(f"  {'accepting that reply (all)':<38}{size:>7}{costs['accept_short_us']:>9.1f}")
    print(f"  {'that reply, for no request in flight':<38}{size:>7}{costs['late_short_us']:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300, help="calls per round (default 300)")
    args = parser.parse_args()
    costs = measure_garbage_costs(args.count)
    print_garbage_costs(costs)
    print(json.dumps(ratios(costs), indent=1))


if __name__ == "__main__":
    main()
