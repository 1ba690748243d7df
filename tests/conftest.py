"""Test configuration: Hypothesis profiles.

Profiles (choose with ``HYPOTHESIS_PROFILE``): ``dev`` (default; random, a few examples) and
``ci`` (deterministic: ``derandomize=True``, no example database), which ``.ci/run`` selects.
"""

from __future__ import annotations

import os

# Before any test module imports torch: the command's OpenMP wait settings (_loracheck.py).
from _loracheck import openmp_wait_defaults  # noqa: E402

openmp_wait_defaults()

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
