r"""Griffe extension for the API pages: the docstrings' reStructuredText markup shown as Markdown.

The package's docstrings use Sphinx roles (``:func:`x```, ``:math:`x```) and the directives
``.. math::`` and ``.. code-block::``.  The API reference renders docstrings as Markdown, so this
extension rewrites, before mkdocstrings parses them:

* a role to inline code: ``:func:`~a.b.c``` to ``c``, ``:func:`a.b``` to ``a.b``,
  ``:math:`\hat D``` to ``\hat D``;
* a directive and its indented body to a fenced code block;
* a line ending in ``::`` (a literal block follows) to one ending in ``:``.

Only the text shown on the site changes; the source files are read, never written.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:math|func|class|meth|mod|attr|data|obj|exc|const|ref):`(~?)([^`]+)`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. (math|code-block)::[ \t]*(.*)$")


def _role(match: re.Match[str]) -> str:
    text = " ".join(match.group(2).split())
    if match.group(1):  # ~a.b.c: the last component only
        text = text.rsplit(".", 1)[-1]
    return f"`{text}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _directives(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, kind, argument = m.groups()
        i += 1
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            body.append(lines[i])
            i += 1
        text = textwrap.dedent("\n".join(body)).strip("\n").split("\n")
        if kind == "math" and argument.strip():  # the first line of the formula is the argument
            text = [argument.strip(), *text] if any(t.strip() for t in text) else [argument.strip()]
        language = argument.strip() if kind == "code-block" and argument.strip() else "text"
        out += [f"{indent}```{language}", *(indent + t if t.strip() else "" for t in text), f"{indent}```"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return out


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with Sphinx roles and directives as Markdown (see the module docstring)."""
    text = _ROLE.sub(_role, text)
    text = "\n".join(_directives(text.split("\n")))
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.M)


class RstMarkup(griffe.Extension):
    """Rewrite each docstring's reStructuredText markup before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
