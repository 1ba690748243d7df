"""Test configuration: Hypothesis profiles.

Profiles (choose with ``HYPOTHESIS_PROFILE``): ``dev`` (default; random, a few examples) and
``ci`` (deterministic: ``derandomize=True``, no example database), which ``.ci/run`` selects.
"""

from __future__ import annotations

import os

# Before any test module imports torch: idle OpenMP threads sleep (as in the command: _loracheck.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("dev", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
