"""A peer's retransmission timeout, estimated from its round trips as TCP does (sans-IO).

RFC 6298: the smoothed round-trip time and its variation give the timeout,
``srtt + 4 * rttvar``. A reply to a request sent once is a round trip
(:meth:`RttEstimate.sample`). A reply to a request sent several times could
answer any of its copies (Karn's problem); :meth:`RttEstimate.answered_last`
takes from it what cannot mislead towards a later retransmission: that the
round trip is at least the time since the last copy, and that a reply far
quicker than the estimate means the peer has turned quick again; and a
doubted estimate takes such a reply as a round trip, which can only shorten
the timeout.

Silence teaches nothing here. A lost datagram and a slow peer look alike
until a reply comes, and waiting longer helps only the second: so silence
never stretches a peer's timeout (each query's own schedule backs off), and
only replies seen to come late do.
"""

from __future__ import annotations

import math

# RFC 6298's gains and the clock granularity it adds (here: 1 ms).
_ALPHA = 1 / 8
_BETA = 1 / 4
_K = 4
_GRANULARITY = 0.001
# A round trip this many times quicker than the smoothed one starts the
# estimate afresh: the peer has turned quick (a daemon back from overload,
# a route repaired), and averaging would take dozens of replies to notice.
_RESTART_RATIO = 4
# Queries in a row that gave up on the peer while its estimate held a
# retransmission back, before the estimate is doubted. (One is too few: with
# every peer slow, some peer is the last to answer in every query.)
_DOUBT_AFTER = 3


class RttEstimate:
    """One peer's round trips and the retransmission timeout they give."""

    __slots__ = ("_unheard", "doubted", "rttvar", "srtt")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._unheard = 0
        #: Whether, three queries in a row, this peer was asked later than the
        #: schedule for its estimate's sake and then stayed silent to the end,
        #: or answered within ``srtt`` of that late copy: then the estimate
        #: may be out of date, and until a reply confirms one, :attr:`timeout`
        #: is 0.
        self.doubted = False

    def __repr__(self) -> str:
        if self.srtt is None:
            return "<RttEstimate unmeasured>"
        doubted = " doubted" if self.doubted else ""
        return f"<RttEstimate srtt={self.srtt * 1e3:.2f}ms rto={self.timeout * 1e3:.2f}ms{doubted}>"

    @property
    def timeout(self) -> float:
        """Seconds to wait for a reply before asking again: ``srtt + 4 * rttvar``
        (at least 1 ms more than ``srtt``); 0 while nothing is measured or
        the estimate is :attr:`doubted`."""
        if self.srtt is None or self.doubted:
            return 0.0
        return self.srtt + max(_GRANULARITY, _K * self.rttvar)

    def sample(self, rtt: float) -> None:
        """A reply came ``rtt`` seconds after the one send of its request.

        Smoothed as RFC 6298 says, with two changes for quicker replies:
        the deviation of one below ``srtt`` counts an eighth, as in Linux (a
        peer turning quicker must not look erratic, which would raise its
        timeout), and one four times quicker than ``srtt`` restarts the
        estimate.
        """
        if not 0 <= rtt < math.inf:
            return  # a clock that went backwards, or nonsense: no information
        self.doubted, self._unheard = False, 0
        srtt = self.srtt
        if srtt is None or rtt * _RESTART_RATIO < srtt:
            self.srtt, self.rttvar = rtt, rtt / 2
        elif rtt < srtt:
            # As Linux does: a quicker reply's deviation counts an eighth.
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * (srtt - rtt) / 8
            self.srtt = (1 - _ALPHA) * srtt + _ALPHA * rtt
        else:
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * (rtt - srtt)
            self.srtt = (1 - _ALPHA) * srtt + _ALPHA * rtt

    def answered_last(self, seconds: float, *, stretched: bool = False) -> None:
        """A reply came ``seconds`` after the last of several sends of its request.

        The round trip was at least ``seconds``: longer than ``srtt`` (or
        with nothing measured yet), that is a sample, and the estimate grows
        towards what the peer shows. Four times quicker than ``srtt``, the
        peer answered the last copy promptly: it has turned quick, and the
        estimate restarts from there. Between the two, the reply may answer
        any copy and teaches no round trip, but shows the peer has not
        turned quick; with two exceptions. If the estimate held the last
        copy back (``stretched``: the first retransmission waited past the
        schedule's interval for its sake), the estimate may be what delays
        the answers (a peer losing every first copy and answering the next
        promptly would never teach it otherwise): that is a :meth:`doubt`.
        And a :attr:`doubted` estimate (whose timeout the schedule has
        ignored since it was doubted) takes the reply as a round trip: that
        confirms it, and can only shorten the timeout (no wait is ever
        shorter than the schedule's).
        """
        if not seconds >= 0:
            return  # a clock that went backwards, or NaN (inf is ignored by sample)
        srtt = self.srtt
        if srtt is None or seconds > srtt or seconds * _RESTART_RATIO < srtt or self.doubted:
            self.sample(seconds)
        elif stretched:
            self.doubt()
        else:
            self.doubted, self._unheard = False, 0

    def doubt(self) -> None:
        """A query gave up on this peer while its estimate held a retransmission back,
        or the peer answered soon after a copy the estimate held back.

        The peer may have changed (turned quick, but losing datagrams): had
        it been asked on the schedule, it might have answered. The third time
        in a row, the estimate is :attr:`doubted` until a reply is measured,
        and the schedule rules.
        """
        if self.srtt is not None:
            self._unheard += 1
            self.doubted = self._unheard >= _DOUBT_AFTER
