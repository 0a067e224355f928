"""The differential fuzzer against the real daemon (``tests/differential.py``).

The default suite runs a short seeded campaign, so that a regression in the
in-process server's fidelity fails CI; ``nox -s fuzz`` runs a long one with a
fresh seed (``TRIOCONFD_DIFFERENTIAL_SEED`` and ``_ROUNDS`` set them).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from .differential import campaign

pytestmark = pytest.mark.interop

_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"


@pytest.mark.fuzz
async def test_the_daemon_and_the_server_answer_the_same_bytes_alike(
    ganeti_confd_binary: str, tmp_path: Path
) -> None:
    if _LONG:
        seed = int(os.environ.get("TRIOCONFD_DIFFERENTIAL_SEED", random.randrange(2**32)))
        rounds = int(os.environ.get("TRIOCONFD_DIFFERENTIAL_ROUNDS", "40"))
        requests = 1000
    else:
        seed, rounds, requests = 20261125, 4, 60
    report = await campaign(
        ganeti_confd_binary, tmp_path, seed=seed, rounds=rounds, requests=requests
    )
    print(f"seed {seed}: {report.summary()}")
    assert report.total >= rounds * min(requests, 50)
    assert report.identical + report.known == report.total, f"seed {seed}: {report.summary()}"
    assert not report.differences
