"""The import structure: packages and rooms in one direction, and no import cycle anywhere.

Every import counts, module-level or inside a function: a function-level import hides a cycle from
the interpreter at load time, not from a reader.  The graph is read from the source (``ast``), so
nothing is imported to check it.

* theory <- landscapes <- verify; figures reads saved reports and imports theory only.
* In ``verify``: a paper room (``jlr``, ``kkr``, ``wyl``, ``hsk``) uses ``landscapes``, ``theory``,
  the shared flat modules of ``verify`` and itself -- never another paper, the run machinery
  (``run``, ``sweep``, ``cli``) or the modules that gather every paper (``registry``, ``report``).
* The shared flat modules of ``verify`` below the papers import no paper room and no machinery.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "landscapes", "verify", "figures")
PAPERS = ("verify.jlr", "verify.kkr", "verify.wyl", "verify.hsk")
MACHINERY = ("verify.run", "verify.sweep", "verify.cli")
#: Flat ``verify`` modules that gather every paper's checkers: above the papers, below the machinery.
GATHERING = ("verify.registry", "verify.report")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module or ``module.attribute``) loads, if any."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> Iterator[tuple[str, int]]:
    """(imported module of ours, line) for every import statement of ``module``, at any depth."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                target = _resolve(a.name)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                target = _resolve(f"{base}.{a.name}") if base else None
                if target:
                    yield target, node.lineno


GRAPH: dict[str, set[str]] = {m: {t for t, _ in _imports(m) if t != m} for m in MODULES}


def _room(module: str) -> str:
    """The room of a module: a paper or machinery subpackage, or the module itself."""
    for prefix in PAPERS + MACHINERY:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return module


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    # a guard against a test that passes because it reads nothing
    assert len(MODULES) > 80
    assert "verify.kkr.training" in GRAPH["verify.kkr.checkers"]
    assert "landscapes.problem" in GRAPH["landscapes.nuc"]


def test_no_import_cycle():
    cycles = _cycles()
    assert not cycles, "import cycles (module-level or function-level imports):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_cycle_detection_finds_a_planted_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, "theory.claims", GRAPH["theory.claims"] | {"verify.registry"})
    assert any("theory.claims" in c and "verify.registry" in c for c in _cycles())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_import_direction(module):
    top = module.split(".")[0]
    allowed = {
        "theory": {"theory"},
        "landscapes": {"theory", "landscapes"},
        "verify": {"theory", "landscapes", "verify", "figures"},
        "figures": {"theory", "figures"},
    }[top]
    room = _room(module)
    for target, line in _imports(module):
        where = f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}"
        assert target.split(".")[0] in allowed, where
        other = _room(target)
        if other == room:
            continue
        if room in PAPERS:
            why = " (a paper room uses shared modules only)"
            assert other not in PAPERS + MACHINERY + GATHERING, where + why
        elif top == "verify" and room not in MACHINERY and room not in GATHERING and room != "verify":
            # a shared flat module below the papers
            why = " (a shared module is below the papers)"
            assert other not in PAPERS + MACHINERY + GATHERING, where + why
