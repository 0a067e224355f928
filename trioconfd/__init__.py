"""trioconfd: a Trio-native client for Ganeti's confd protocol.

The protocol core (messages, packing, the quorum rule, reply aggregation) is
pure and does no I/O; :func:`open_confd_client` and :func:`query` put it on a
Trio UDP socket.
"""

from . import callbacks, requests
from ._aggregate import Address, PeerReply, QueryResult, ReplyAggregator
from ._client import ConfdClient, open_confd_client, query
from ._constants import (
    DEFAULT_COVERAGE,
    DEFAULT_PORT,
    EXPIRE_TIMEOUT,
    MAGIC,
    MAX_CLOCK_SKEW,
    MAX_DATAGRAM_SIZE,
    MAX_REQUEST_SIZE,
    PROTOCOL_VERSION,
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
    ConfdClientError,
    ConfdError,
    ConfdMagicError,
    ConfdProtocolError,
    ConfdSignatureError,
)
from ._messages import ConfdReply, ConfdRequest, Query, new_rsalt
from ._node import (
    InsecureKeyFileWarning,
    ganeti_data_dir,
    read_hmac_key,
    read_master_candidate_ips,
)
from ._peers import PeerSpec, default_port
from ._peers import parse_peer_text as parse_peer
from ._quorum import QuorumRule, needed_replies
from ._retry import RetryPolicy
from ._stats import ClientStats
from ._stream import ReplyStream
from ._upcall import Callback, Upcall
from ._version import __version__
from ._wire import HmacKey, pack_reply, pack_request, unpack_reply, unpack_request

__all__ = [
    "DEFAULT_COVERAGE",
    "DEFAULT_PORT",
    "EXPIRE_TIMEOUT",
    "MAGIC",
    "MAX_CLOCK_SKEW",
    "MAX_DATAGRAM_SIZE",
    "MAX_REQUEST_SIZE",
    "PROTOCOL_VERSION",
    "UPCALL_EXPIRE",
    "UPCALL_REPLY",
    "Address",
    "Callback",
    "ClientStats",
    "ConfdClient",
    "ConfdClientError",
    "ConfdError",
    "ConfdMagicError",
    "ConfdProtocolError",
    "ConfdReply",
    "ConfdRequest",
    "ConfdSignatureError",
    "ErrorCode",
    "HmacKey",
    "InsecureKeyFileWarning",
    "MasterField",
    "NodeRole",
    "PeerReply",
    "PeerSpec",
    "Query",
    "QueryKey",
    "QueryResult",
    "QuorumRule",
    "ReplyAggregator",
    "ReplyStatus",
    "ReplyStream",
    "RequestType",
    "RetryPolicy",
    "Upcall",
    "UpcallType",
    "__version__",
    "callbacks",
    "default_port",
    "ganeti_data_dir",
    "needed_replies",
    "new_rsalt",
    "open_confd_client",
    "pack_reply",
    "pack_request",
    "parse_peer",
    "query",
    "read_hmac_key",
    "read_master_candidate_ips",
    "requests",
    "unpack_reply",
    "unpack_request",
]
