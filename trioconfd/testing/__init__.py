"""Tools for testing code that uses trioconfd, and trioconfd itself.

- :func:`open_confd_server` runs an in-process confd server that answers like the
  real daemon; :func:`open_confd_cluster` runs several, as a cluster's.
- :func:`open_fault_proxy` sits in front of any confd server and drops, delays,
  duplicates, reorders or corrupts datagrams, seeded for repeatable runs.
- :func:`open_simulated_cluster` runs confd peers on a simulated network behind
  ``trio.socket``, with crashes, partitions and faults, in simulated time.
- :func:`make_cluster_config` builds valid Ganeti 3.0 configurations, and
  :func:`fail_over` moves one's master to another node.
- :func:`open_ganeti_confd` runs Ganeti's real daemon unprivileged on loopback.
- :mod:`trioconfd.testing.strategies` has Hypothesis strategies (it needs
  ``hypothesis``, which this package does not import otherwise).
- :mod:`trioconfd.testing.pytest_plugin` gives pytest fixtures for both
  kinds of cluster; it is registered when trioconfd is installed.
"""

import warnings
from typing import Any

from ._answers import ConfigAnswers
from ._capacity import Capacity, ServiceStats
from ._cluster import ConfdCluster, open_confd_cluster
from ._config import fail_over, make_cluster_config
from ._faults import DirectionStats, Faults
from ._ganeti import (
    DEBIAN_GANETI_CONFD,
    GanetiConfd,
    GanetiConfdError,
    find_ganeti_confd,
    free_udp_port,
    open_ganeti_confd,
)
from ._proxy import FaultProxy, open_fault_proxy
from ._server import ConfdServer, ServerStats, load_config, open_confd_server
from ._simnet import SimulatedNetwork, SimulatedSocket
from ._simulated import SimulatedCluster, open_simulated_cluster

__all__ = [
    "DEBIAN_GANETI_CONFD",
    "Capacity",
    "ConfdCluster",
    "ConfdServer",
    "ConfigAnswers",
    "DirectionStats",
    "FaultProxy",
    "Faults",
    "GanetiConfd",
    "GanetiConfdError",
    "ServerStats",
    "ServiceStats",
    "SimulatedCluster",
    "SimulatedNetwork",
    "SimulatedSocket",
    "fail_over",
    "find_ganeti_confd",
    "free_udp_port",
    "load_config",
    "make_cluster_config",
    "open_confd_cluster",
    "open_confd_server",
    "open_fault_proxy",
    "open_ganeti_confd",
    "open_simulated_cluster",
]

for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type) and issubclass(_value, BaseException):
        _value.__module__ = __name__  # printed where users catch it
del _name, _value

# The names these had before 0.1: ``async with`` helpers are ``open_*`` in
# Trio's style. Kept for one release, with a DeprecationWarning.
_DEPRECATED = {
    "serve_confd": "open_confd_server",
    "serve_cluster": "open_confd_cluster",
    "fault_proxy": "open_fault_proxy",
    "simulated_cluster": "open_simulated_cluster",
    "run_ganeti_confd": "open_ganeti_confd",
}


def __getattr__(name: str) -> Any:
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"trioconfd.testing.{name} is deprecated: use trioconfd.testing.{new}",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]
