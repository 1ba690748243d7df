"""The documentation: the site builds, its code blocks run, its links resolve, its CLI page is current.

Code blocks: every ```` ```python ```` block of README.md and docs/ runs, each in a fresh namespace
and an empty working directory, unless the line right before its fence is an HTML comment:

* ``<!-- slow -->``: it takes more than a few seconds or needs the real model; it runs only with
  ``LORACHECK_SLOW_DOCS=1`` (and is marked ``slow``);
* ``<!-- skip: REASON -->``: it cannot run as it stands (a signature, a snippet that needs your
  own files);
* ``<!-- test: NAME -->`` and ``<!-- worked-example -->``: another test runs it
  (tests/landscapes/test_io.py and tests/verify/test_strategies.py).

A block that defines ``test_*`` functions without parameters (Hypothesis tests) also calls them.

docs/cli.md is generated from the command line's own help, docs/code-map.md from the modules'
docstrings; after changing an option or adding a module, regenerate them with
``python tests/test_docs.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
SLOW_DOCS = os.environ.get("LORACHECK_SLOW_DOCS") == "1"
CLI_PAGE = DOCS / "cli.md"
CODE_MAP = DOCS / "code-map.md"

# ---------------------------------------------------------------------------------------------
# Code blocks
# ---------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*(.*?)\s*-->")
_RUN_ELSEWHERE = re.compile(r"test: [\w-]+|worked-example")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    mark: str  # "" (runs), "slow", "skip: ...", or one that another test runs
    source: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def fenced_blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """``(line of the fence, language, mark, source)`` of each fenced block of a Markdown page."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.fullmatch(before.strip())
        out.append((line, m.group(1), mark.group(1) if mark else "", m.group(2)))
    return out


def python_blocks() -> list[Block]:
    return [
        Block(path, line, mark, source)
        for path in PAGES
        for line, lang, mark, source in fenced_blocks(path)
        if lang == "python" and not _RUN_ELSEWHERE.fullmatch(mark)
    ]


BLOCKS = python_blocks()
FAST = [b for b in BLOCKS if not b.mark]
SLOW = [b for b in BLOCKS if b.mark == "slow"]


def run_block(block: Block, cwd: Path) -> None:
    namespace: dict = {"__name__": "__docs__"}
    with contextlib.chdir(cwd):
        exec(compile(block.source, block.id, "exec"), namespace)
        for name, obj in list(namespace.items()):
            if name.startswith("test_") and callable(obj):
                obj()  # a Hypothesis test defined by the block


def test_every_mark_is_known():
    for path in PAGES:
        for line, lang, mark, _ in fenced_blocks(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            assert mark in ("", "slow") or mark.startswith("skip: ") or _RUN_ELSEWHERE.fullmatch(mark), (
                f"{where}: unknown mark {mark!r} (use <!-- slow --> or <!-- skip: REASON -->)"
            )
            if mark:
                assert lang == "python", f"{where}: a mark before a {lang or 'plain'} block"


def test_the_pages_have_runnable_blocks():
    assert len(FAST) >= 8 and len(SLOW) >= 5
    assert {b.path.name for b in FAST} >= {"README.md", "getting-started.md", "strategies.md"}


@pytest.mark.parametrize("block", FAST, ids=lambda b: b.id)
def test_code_block_runs(block, tmp_path, capsys):
    run_block(block, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW_DOCS, reason="slow documentation example: set LORACHECK_SLOW_DOCS=1 to run it")
@pytest.mark.parametrize("block", SLOW, ids=lambda b: b.id)
def test_slow_code_block_runs(block, tmp_path, capsys):
    run_block(block, tmp_path)


# ---------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------

_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def without_code_fences(text: str) -> str:
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def without_code(text: str) -> str:
    """``text`` with fenced blocks and inline code blanked (links inside them are not links)."""
    text = without_code_fences(text)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text, flags=re.S)


def slugify(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's ``toc`` extension (MkDocs) makes it."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    seen: set[str] = set()
    for m in _HEADING.finditer(without_code_fences(path.read_text(encoding="utf-8"))):
        slug, n = slugify(m.group(2)), 1
        while (slug if n == 1 else f"{slug}_{n - 1}") in seen:
            n += 1
        seen.add(slug if n == 1 else f"{slug}_{n - 1}")
    return seen


def links(path: Path) -> list[str]:
    return _LINK.findall(without_code(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    bad = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.is_file():
            bad.append(f"{target}: no such file")
            continue
        if page.is_relative_to(DOCS) and not dest.is_relative_to(DOCS):
            bad.append(f"{target}: outside docs/, which the site does not have")
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with the anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_link_reader():
    text = "[a](x.md) ![b](f.png) [c [d]](y.md#h) `[e](no.md)` [f](https://e.org)\n```\n[g](no.md)\n```\n"
    assert _LINK.findall(without_code(text)) == ["x.md", "f.png", "y.md#h", "https://e.org"]
    assert slugify("PEFT interop (`pip install '.[peft]'`)") == "peft-interop-pip-install-peft"
    assert slugify("Resuming, and what a resume file can and cannot prove") == (
        "resuming-and-what-a-resume-file-can-and-cannot-prove"
    )
    assert slugify('The phase task (`task = "phase"`)') == "the-phase-task-task-phase"


def test_readme_setup_commands_are_those_of_getting_started():
    def commands(path: Path) -> list[str]:
        return [src for _, lang, _, src in fenced_blocks(path) if lang == "bash" and "python3 -m venv" in src]

    readme = commands(ROOT / "README.md")
    assert len(readme) == 2 and readme == commands(DOCS / "getting-started.md")


# ---------------------------------------------------------------------------------------------
# The site
# ---------------------------------------------------------------------------------------------


def test_site_builds_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[docs]')")
    site = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", site],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    api = (site / "api" / "jlr" / "index.html").read_text(encoding="utf-8")
    assert "check_jlr_rank_nuc" in api and ":math:`" not in api
    assert (site / "schemas" / "report-1.json").is_file() and (site / "figures" / "index.html").is_file()
    assert not (site / "hooks").exists()


# ---------------------------------------------------------------------------------------------
# The command-line page
# ---------------------------------------------------------------------------------------------

_CLI_HEAD = """# Command line

<!-- Generated from the help of `loracheck` and of each command with Python {version} (100 columns) by
tests/test_docs.py; regenerate it with `python tests/test_docs.py` instead of editing it. -->

Every command below prints the same text with `--help`. What the exit codes mean:
[Exit codes](robustness.md#exit-codes); what the commands are for, with examples:
[Commands, reports and audits](usage.md).
"""


def cli_help(*args: str) -> str:
    from verify.cli import main

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps the help to the terminal's width
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            code = main([*args, "--help"])
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    assert code == 0, (args, code)
    return buf.getvalue().rstrip() + "\n"


def cli_reference() -> str:
    top = cli_help()
    listing = top.split("positional arguments:", 1)[1].split("options:", 1)[0]
    commands = re.findall(r"^ {4}([a-z][\w-]*)", listing, flags=re.M)
    assert commands, top
    parts = [_CLI_HEAD.format(version=f"{sys.version_info[0]}.{sys.version_info[1]}")]
    parts.append(f"## `loracheck`\n\n```text\n{top}```\n")
    parts += [f"## `loracheck {c}`\n\n```text\n{cli_help(c)}```\n" for c in commands]
    return "\n".join(parts)


def test_cli_page_is_current():
    page = CLI_PAGE.read_text(encoding="utf-8")
    made_with = re.search(r"with Python (\d+\.\d+)", page)
    assert made_with, "docs/cli.md: no 'with Python X.Y' in its header; regenerate it"
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if made_with.group(1) != here:
        pytest.skip(f"docs/cli.md was generated with Python {made_with.group(1)}: argparse's layout differs")
    assert page == cli_reference(), "docs/cli.md is out of date; regenerate it: python tests/test_docs.py"


# ---------------------------------------------------------------------------------------------
# The code map: one line per module
# ---------------------------------------------------------------------------------------------

_MAP_HEAD = """# Code map

<!-- Generated from the first sentence of each module's docstring by tests/test_docs.py; regenerate
it with `python tests/test_docs.py` instead of editing it. -->

Four packages; imports flow one way, `theory` <- `landscapes` <- `verify`, and `figures` reads saved
results and imports `theory` only (tests/test_layering.py fails on any other arrow and on any import
cycle). A flat module is shared by its package; a subpackage is one paper's room (`verify/jlr`,
`verify/kkr`, `verify/wyl`, `verify/hsk`), one kind of machinery (`verify/run`, `verify/sweep`,
`verify/cli`, `landscapes/curvature`), the non-linearized problems (`landscapes/nonlinear`) or the
real model (`landscapes/transformer`). A paper's room may import `landscapes`, `theory`, the shared
flat `verify` modules and itself, never `run`, `sweep`, `cli`, the registry or the report.
"""


def _first_sentence(path: Path) -> str:
    """The docstring's first sentence, its reStructuredText roles shown as Markdown code."""
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "(no docstring)"
    para = " ".join(doc.strip().split("\n\n", 1)[0].split())
    m = re.match(r"(.+?\.)(\s|$)", para)
    text = (m.group(1) if m else para).rstrip(".")
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)  # :math:`x`, :func:`~a.b` -> `x`, `a.b`
    return text.replace("``", "`")


def code_map() -> str:
    parts = [_MAP_HEAD]
    for pkg in ("theory", "landscapes", "verify", "figures"):
        for d in sorted(p for p in (ROOT / pkg).rglob("") if (p / "__init__.py").is_file()):
            rel = d.relative_to(ROOT).as_posix()
            parts.append(f"\n## `{rel}/`: {_first_sentence(d / '__init__.py')}\n")
            for f in sorted(d.glob("*.py")):
                if f.name != "__init__.py":
                    parts.append(f"- `{f.name}`: {_first_sentence(f)}")
    return "\n".join(parts) + "\n"


def test_code_map_is_current():
    assert CODE_MAP.read_text(encoding="utf-8") == code_map(), (
        "docs/code-map.md is out of date; regenerate it: python tests/test_docs.py"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    CLI_PAGE.write_text(cli_reference(), encoding="utf-8")
    CODE_MAP.write_text(code_map(), encoding="utf-8")
    print(f"wrote {CLI_PAGE.relative_to(ROOT)} and {CODE_MAP.relative_to(ROOT)}")
