"""The Trio client: a UDP socket, a receive task, a memory channel and a cancel scope per query.

``_open`` opens the socket and the nursery; ``_router`` runs the receive task
and its routing table; ``_gather`` holds a request in flight (its sends, its
channel, its verdict), and ``_stream`` reads one reply by reply; ``_parity``
is Ganeti's send/wait/expire API; ``_arguments`` checks what callers pass;
``_logs`` keeps per-datagram log lines to one per kind per interval; ``_client`` is
the public :class:`ConfdClient` that ties them together, and whose
``query`` is a query's life (wait for places, send, read the channel under
a cancel scope, resend).
"""

from ..protocol import format_address
from ._client import ConfdClient
from ._errors import ConfdClientBrokenError, ConfdClientClosedError, ConfdRequestEndedError
from ._logs import DEFAULT_LOG_INTERVAL
from ._node import (
    InsecureKeyFileWarning,
    ganeti_data_dir,
    read_hmac_key,
    read_master_candidate_ips,
)
from ._open import DEFAULT_MAX_OUTSTANDING, open_confd_client, query
from ._peers import (
    LocalAddress,
    PeerSpec,
    check_port,
    default_port,
    parse_peer_text,
    parse_peers,
    resolve_peers,
)
from ._stats import ClientStats
from ._stream import ReplyStream
from ._upcalls import SLOW_CALLBACK, Callback, Upcall
from ._watch import Watch

__all__ = [
    "DEFAULT_LOG_INTERVAL",
    "DEFAULT_MAX_OUTSTANDING",
    "SLOW_CALLBACK",
    "Callback",
    "ClientStats",
    "ConfdClient",
    "ConfdClientBrokenError",
    "ConfdClientClosedError",
    "ConfdRequestEndedError",
    "InsecureKeyFileWarning",
    "LocalAddress",
    "PeerSpec",
    "ReplyStream",
    "Upcall",
    "Watch",
    "check_port",
    "default_port",
    "format_address",
    "ganeti_data_dir",
    "open_confd_client",
    "parse_peer_text",
    "parse_peers",
    "query",
    "read_hmac_key",
    "read_master_candidate_ips",
    "resolve_peers",
]
