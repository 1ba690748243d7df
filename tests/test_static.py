"""House rules enforced in CI: ruff (with docstring rules) and mypy on the library packages."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["theory", "landscapes", "verify", "figures", "_loracheck.py"]


def test_ruff_clean():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *PACKAGES, "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean():
    r = subprocess.run(
        [sys.executable, "-m", "mypy", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
