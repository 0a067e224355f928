"""trioconfd: a Trio-native client for Ganeti's confd protocol.

Three layers, one folder each: :mod:`trioconfd.protocol` is the protocol
without I/O (messages, packing, the quorum rule, verdicts);
:mod:`trioconfd.client` puts it on a Trio UDP socket (:func:`open_confd_client`,
:func:`query`); :mod:`trioconfd.cli` is the ``trioconfd`` command.
:mod:`trioconfd.testing` has the in-process server and the test tools.
"""

import importlib
import warnings

from . import callbacks, requests
from ._version import __version__
from .client import (
    DEFAULT_LOG_INTERVAL,
    SLOW_CALLBACK,
    Callback,
    ClientStats,
    ConfdClient,
    ConfdClientBrokenError,
    ConfdClientClosedError,
    ConfdRequestEndedError,
    InsecureKeyFileWarning,
    LocalAddress,
    PeerSpec,
    ReplyStream,
    Upcall,
    Watch,
    default_port,
    ganeti_data_dir,
    open_confd_client,
    parse_peer_text,
    query,
    read_hmac_key,
    read_master_candidate_ips,
    resolve_peers,
)
from .protocol import (
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
    Address,
    AdmissionPolicy,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientError,
    ConfdError,
    ConfdMalformedError,
    ConfdProtocolError,
    ConfdReply,
    ConfdRequest,
    ConfdSignatureError,
    ConfdUnknownSaltError,
    ErrorCode,
    HmacKey,
    MasterField,
    NodeRole,
    PeerReply,
    Query,
    QueryKey,
    QueryResult,
    QuorumRule,
    ReplyAggregator,
    ReplyStatus,
    RequestType,
    RetryPolicy,
    UpcallType,
    needed_replies,
    new_rsalt,
    pack_request,
    unpack_reply,
)

__all__ = [
    "DEFAULT_COVERAGE",
    "DEFAULT_LOG_INTERVAL",
    "DEFAULT_PORT",
    "EXPIRE_TIMEOUT",
    "MAGIC",
    "MAX_CLOCK_SKEW",
    "MAX_DATAGRAM_SIZE",
    "MAX_REQUEST_SIZE",
    "PROTOCOL_VERSION",
    "SLOW_CALLBACK",
    "UPCALL_EXPIRE",
    "UPCALL_REPLY",
    "Address",
    "AdmissionPolicy",
    "Callback",
    "ClientStats",
    "ConfdArgumentError",
    "ConfdArgumentTypeError",
    "ConfdClient",
    "ConfdClientBrokenError",
    "ConfdClientClosedError",
    "ConfdClientError",
    "ConfdError",
    "ConfdMalformedError",
    "ConfdProtocolError",
    "ConfdReply",
    "ConfdRequest",
    "ConfdRequestEndedError",
    "ConfdSignatureError",
    "ConfdUnknownSaltError",
    "ErrorCode",
    "HmacKey",
    "InsecureKeyFileWarning",
    "LocalAddress",
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
    "Watch",
    "__version__",
    "callbacks",
    "default_port",
    "ganeti_data_dir",
    "needed_replies",
    "new_rsalt",
    "open_confd_client",
    "pack_request",
    "parse_peer_text",
    "query",
    "read_hmac_key",
    "read_master_candidate_ips",
    "requests",
    "resolve_peers",
    "unpack_reply",
]


def _publish_exceptions() -> None:
    """Errors print as ``trioconfd.ConfdClientError``, where users catch them, not
    as the private module that defines them."""
    namespace = globals()
    for name in __all__:
        value = namespace[name]
        if isinstance(value, type) and issubclass(value, BaseException):
            value.__module__ = __name__


_publish_exceptions()

# Names that moved, kept for one release with a DeprecationWarning: the
# server's side of the wire is trioconfd.protocol's, and parse_peer was a
# second name for parse_peer_text.
_MOVED = {
    "pack_reply": ("trioconfd.protocol", "pack_reply"),
    "unpack_request": ("trioconfd.protocol", "unpack_request"),
    "parse_peer": ("trioconfd", "parse_peer_text"),
    "ConfdMagicError": ("trioconfd", "ConfdMalformedError"),
}


def __getattr__(name: str) -> object:
    moved = _MOVED.get(name)
    if moved is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, new = moved
    warnings.warn(
        f"trioconfd.{name} is deprecated: use {module}.{new}", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(module), new)
