"""Tools for testing code that uses trioconfd, and trioconfd itself.

- :func:`make_cluster_config` builds valid Ganeti 3.0 configurations.
- :func:`run_ganeti_confd` runs Ganeti's real daemon unprivileged on loopback.
"""

from ._config import make_cluster_config
from ._ganeti import (
    DEBIAN_GANETI_CONFD,
    GanetiConfd,
    GanetiConfdError,
    find_ganeti_confd,
    free_udp_port,
    run_ganeti_confd,
)

__all__ = [
    "DEBIAN_GANETI_CONFD",
    "GanetiConfd",
    "GanetiConfdError",
    "find_ganeti_confd",
    "free_udp_port",
    "make_cluster_config",
    "run_ganeti_confd",
]
