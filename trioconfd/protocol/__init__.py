"""The confd protocol without I/O: messages, the wire format, the quorum rule, verdicts.

Nothing in this package imports Trio, opens a socket or reads a clock it is
not handed: it turns bytes into messages and replies into a verdict, so the
Trio client (:mod:`trioconfd.client`), the in-process server and the tests
all share one implementation of the protocol.
"""

import warnings

from ._admission import AdmissionPolicy, Window
from ._aggregate import Address, PeerReply, QueryResult, ReplyAggregator, format_address
from ._constants import (
    DEFAULT_COVERAGE,
    DEFAULT_PORT,
    EXPIRE_TIMEOUT,
    MAGIC,
    MAX_CLOCK_SKEW,
    MAX_DATAGRAM_SIZE,
    MAX_REQUEST_SIZE,
    PROTOCOL_VERSION,
    SERVICE_NAME,
    UPCALL_EXPIRE,
    UPCALL_REPLY,
    ErrorCode,
    MasterField,
    NodeRole,
    QueryKey,
    ReplyStatus,
    RequestType,
    UpcallType,
)
from ._errors import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientError,
    ConfdError,
    ConfdMalformedError,
    ConfdProtocolError,
    ConfdSignatureError,
    ConfdUnknownSaltError,
)
from ._messages import ConfdReply, ConfdRequest, Query, new_rsalt
from ._quorum import QuorumRule, needed_replies, quorum_of
from ._request_wire import unpack_request
from ._retry import RetryPolicy
from ._rtt import RttEstimate
from ._schedule import BEHIND_WAKE, LATE_WAKE, Due, SendSchedule
from ._wire import (
    HmacKey,
    KeyLike,
    as_hmac_key,
    pack_reply,
    pack_request,
    unpack_reply,
)

__all__ = [
    "BEHIND_WAKE",
    "DEFAULT_COVERAGE",
    "DEFAULT_PORT",
    "EXPIRE_TIMEOUT",
    "LATE_WAKE",
    "MAGIC",
    "MAX_CLOCK_SKEW",
    "MAX_DATAGRAM_SIZE",
    "MAX_REQUEST_SIZE",
    "PROTOCOL_VERSION",
    "SERVICE_NAME",
    "UPCALL_EXPIRE",
    "UPCALL_REPLY",
    "Address",
    "AdmissionPolicy",
    "ConfdArgumentError",
    "ConfdArgumentTypeError",
    "ConfdClientError",
    "ConfdError",
    "ConfdMalformedError",
    "ConfdProtocolError",
    "ConfdReply",
    "ConfdRequest",
    "ConfdSignatureError",
    "ConfdUnknownSaltError",
    "Due",
    "ErrorCode",
    "HmacKey",
    "KeyLike",
    "MasterField",
    "NodeRole",
    "PeerReply",
    "Query",
    "QueryKey",
    "QueryResult",
    "QuorumRule",
    "ReplyAggregator",
    "ReplyStatus",
    "RequestType",
    "RetryPolicy",
    "RttEstimate",
    "SendSchedule",
    "UpcallType",
    "Window",
    "as_hmac_key",
    "format_address",
    "needed_replies",
    "new_rsalt",
    "pack_reply",
    "pack_request",
    "quorum_of",
    "unpack_reply",
    "unpack_request",
]


def __getattr__(name: str) -> object:
    if name == "ConfdMagicError":  # its name until it said what it is (0.1)
        warnings.warn(
            "trioconfd.protocol.ConfdMagicError is deprecated: use ConfdMalformedError",
            DeprecationWarning,
            stacklevel=2,
        )
        return ConfdMalformedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
