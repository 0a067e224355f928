"""Tools for testing code that uses trioconfd, and trioconfd itself.

- :func:`serve_confd` runs an in-process confd server that answers like the
  real daemon; :func:`serve_cluster` runs several, as a cluster's.
- :func:`fault_proxy` sits in front of any confd server and drops, delays,
  duplicates, reorders or corrupts datagrams, seeded for repeatable runs.
- :func:`simulated_cluster` runs confd peers on a simulated network behind
  ``trio.socket``, with crashes, partitions and faults, in simulated time.
- :func:`make_cluster_config` builds valid Ganeti 3.0 configurations.
- :func:`run_ganeti_confd` runs Ganeti's real daemon unprivileged on loopback.
- :mod:`trioconfd.testing.strategies` has Hypothesis strategies (it needs
  ``hypothesis``, which this package does not import otherwise).
- :mod:`trioconfd.testing.pytest_plugin` gives pytest fixtures for both
  kinds of cluster; it is registered when trioconfd is installed.
"""

from ._answers import ConfigAnswers
from ._cluster import ConfdCluster, serve_cluster
from ._config import make_cluster_config
from ._faults import DirectionStats, Faults
from ._ganeti import (
    DEBIAN_GANETI_CONFD,
    GanetiConfd,
    GanetiConfdError,
    find_ganeti_confd,
    free_udp_port,
    run_ganeti_confd,
)
from ._proxy import FaultProxy, fault_proxy
from ._server import ConfdServer, ServerStats, load_config, serve_confd
from ._simnet import SimulatedNetwork, SimulatedSocket
from ._simulated import SimulatedCluster, simulated_cluster

__all__ = [
    "DEBIAN_GANETI_CONFD",
    "ConfdCluster",
    "ConfdServer",
    "ConfigAnswers",
    "DirectionStats",
    "FaultProxy",
    "Faults",
    "GanetiConfd",
    "GanetiConfdError",
    "ServerStats",
    "SimulatedCluster",
    "SimulatedNetwork",
    "SimulatedSocket",
    "fault_proxy",
    "find_ganeti_confd",
    "free_udp_port",
    "load_config",
    "make_cluster_config",
    "run_ganeti_confd",
    "serve_cluster",
    "serve_confd",
    "simulated_cluster",
]
