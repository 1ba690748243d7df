"""House rules enforced in CI: ruff (with docstring rules) and mypy on the library packages."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["theory", "landscapes", "verify", "figures"]


def test_ruff_clean():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *PACKAGES, "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean():
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "theory", "landscapes", "verify"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_direction():
    # theory <- landscapes <- verify; figures never imports landscapes or verify
    import ast

    allowed = {
        "theory": set(),
        "landscapes": {"theory"},
        "verify": {"theory", "landscapes", "figures"},
        "figures": {"theory"},
    }
    for pkg, ok in allowed.items():
        for f in (ROOT / pkg).glob("*.py"):
            tree = ast.parse(f.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for n in names:
                    top = n.split(".")[0]
                    if top in allowed and top != pkg:
                        assert top in ok, f"{f.relative_to(ROOT)} imports {n}"
