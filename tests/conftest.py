from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# "default": quick enough for every run; "fuzz": the long nox session.
settings.register_profile("default", max_examples=150, deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("TRIOCONFD_FUZZ_EXAMPLES", "100000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
