"""Protocol constants of Ganeti's confd, as the 3.0 daemon speaks them."""

from __future__ import annotations

import enum
from typing import Final

#: The four bytes every confd datagram starts with ("plain json, version 0").
MAGIC: Final = b"plj0"

#: The largest datagram accepted or packed: the largest UDP payload (65,535
#: bytes less the UDP header and IPv6's; IPv4's is 65,507). ganeti-confd sends
#: replies up to that, though Ganeti's Python client stops at 61,440.
MAX_DATAGRAM_SIZE: Final = 65527

#: The most of a request the daemon reads (it ignores the rest of a longer one).
MAX_REQUEST_SIZE: Final = 4096

#: The port used when the services database does not name ``ganeti-confd``.
DEFAULT_PORT: Final = 1814

#: The name of the confd service in the system's services database.
SERVICE_NAME: Final = "ganeti-confd"

#: The only protocol version the daemon speaks.
PROTOCOL_VERSION: Final = 1

#: Seconds after sending until an unanswered request is forgotten.
EXPIRE_TIMEOUT: Final = 10.0

#: Seconds a request's timestamp may differ from the daemon's clock.
MAX_CLOCK_SKEW: Final = 300

#: How many peers a request goes to when coverage is 0.
DEFAULT_COVERAGE: Final = 6


class RequestType(enum.IntEnum):
    """The ``type`` field of a request."""

    PING = 0
    NODE_ROLE_BYNAME = 1
    NODE_PIP_BY_INSTANCE_IP = 2
    CLUSTER_MASTER = 3
    NODE_PIP_LIST = 4
    MC_PIP_LIST = 5
    INSTANCES_IPS_LIST = 6
    NODE_DRBD = 7
    NODE_INSTANCES = 8
    INSTANCE_DISKS = 9
    CONFIG_QUERY = 10
    DATA_COLLECTORS = 11


class ReplyStatus(enum.IntEnum):
    """The ``status`` field of a reply; printed as its name (``OK``), compared as a number."""

    OK = 0
    ERROR = 1
    NOTIMPLEMENTED = 2

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        # A bare {status} reads as its name; a numeric spec ({status:d}) as its number.
        return self.name if not spec else int.__format__(self, spec)


class NodeRole(enum.IntEnum):
    """The answer of a ``NODE_ROLE_BYNAME`` request."""

    MASTER = 0
    CANDIDATE = 1
    OFFLINE = 2
    DRAINED = 3
    REGULAR = 4


class ErrorCode(enum.IntEnum):
    """The answer of an ``ERROR`` reply for the daemon's "standard" errors."""

    UNKNOWN_ENTRY = 0
    INTERNAL = 1
    ARGUMENT = 2

    @property
    def meaning(self) -> str:
        """What the daemon means by this code, in a few words."""
        return _ERROR_MEANINGS[self]

    def describe(self) -> str:
        """``NAME: meaning``, as the command line prints an error reply."""
        return f"{self.name}: {self.meaning}"


_ERROR_MEANINGS: Final = {
    ErrorCode.UNKNOWN_ENTRY: "no such entry (the name or address is not in the configuration)",
    ErrorCode.INTERNAL: "the daemon failed to answer (an internal error)",
    ErrorCode.ARGUMENT: "the query was not understood (a bad argument, or nothing at that path)",
}


class QueryKey(enum.StrEnum):
    """The keys of a dict-shaped query (strings on the wire)."""

    LINK = "0"
    IP = "1"
    IPLIST = "2"
    FIELDS = "3"


class MasterField(enum.IntEnum):
    """Fields of a ``CLUSTER_MASTER`` query (integers on the wire)."""

    NAME = 0
    IP = 1
    MNODE_PIP = 2


class UpcallType(enum.IntEnum):
    """Why the client calls its callback (same values as Ganeti's)."""

    REPLY = 1
    EXPIRE = 2


UPCALL_REPLY: Final = UpcallType.REPLY
UPCALL_EXPIRE: Final = UpcallType.EXPIRE
