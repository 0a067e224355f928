"""Tools for testing code that uses trioconfd, and trioconfd itself.

- :func:`serve_confd` runs an in-process confd server that answers like the
  real daemon.
- :func:`fault_proxy` sits in front of any confd server and drops, delays,
  duplicates, reorders or corrupts datagrams, seeded for repeatable runs.
- :func:`make_cluster_config` builds valid Ganeti 3.0 configurations.
- :func:`run_ganeti_confd` runs Ganeti's real daemon unprivileged on loopback.
- :mod:`trioconfd.testing.strategies` has Hypothesis strategies (it needs
  ``hypothesis``, which this package does not import otherwise).
"""

from ._answers import ConfigAnswers
from ._config import make_cluster_config
from ._ganeti import (
    DEBIAN_GANETI_CONFD,
    GanetiConfd,
    GanetiConfdError,
    find_ganeti_confd,
    free_udp_port,
    run_ganeti_confd,
)
from ._proxy import DirectionStats, FaultProxy, Faults, fault_proxy
from ._server import ConfdServer, ServerStats, load_config, serve_confd

__all__ = [
    "DEBIAN_GANETI_CONFD",
    "ConfdServer",
    "ConfigAnswers",
    "DirectionStats",
    "FaultProxy",
    "Faults",
    "GanetiConfd",
    "GanetiConfdError",
    "ServerStats",
    "fault_proxy",
    "find_ganeti_confd",
    "free_udp_port",
    "load_config",
    "make_cluster_config",
    "run_ganeti_confd",
    "serve_confd",
]
