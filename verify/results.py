"""Versioned JSON results files that a command rewrites as it goes and an interrupted run resumes.

The convention, for every JSON file that loracheck writes (reports, audits, ``kkr.json``,
``speed.json``, ``phase.json``, ...):

* ``"format": "loracheck.<kind>"`` names what the file is (a text id), ``"version": <int>`` the
  layout of that kind; both come first in the file.
* A file is rewritten atomically (:meth:`ResultsFile.save`): a killed run leaves the previous file
  or the new one, never half of one, so it loses no finished work.
* Re-running a command resumes its file (:meth:`ResultsFile.load`) when the file is of the same
  format and version and of the same identity (the fields that make the results: the
  configuration, the source file, the problem's sha256, ...).  A file of another format, version
  or identity is refused (:class:`~theory.errors.UserInputError` naming the argument, the expected
  and the found value) unless ``fresh``: nothing a user saved is overwritten by mistake.

Files written before this convention spelled it differently, and are still read (their data
resumes and draws as before): a ``"schema"`` key instead of ``"format"``, and the version inside
the text id (``"loracheck.phase/1"``, ``"loracheck.kkr/1-recertified"``).  :func:`saved_format`
reads both spellings; :meth:`ResultsFile.read` returns the data in the current one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from landscapes.io import atomic_write_text
from theory.errors import UserInputError, shown
from theory.fileformat import saved_format
from verify.jsonfile import read_json

__all__ = ["ResultsFile", "saved_format", "current_spelling", "first_difference", "results_schema"]


def current_spelling(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with its format and version in the current spelling (first), the old keys gone."""
    fmt, version = saved_format(data)
    rest = {k: v for k, v in data.items() if k not in ("format", "version", "schema")}
    return {"format": fmt, "version": version, **rest}


def _found(data: Any) -> str:
    """The format and version found in ``data``, for messages."""
    if not isinstance(data, Mapping):
        return f"a JSON {type(data).__name__}, not an object"
    fmt, version = saved_format(data)
    if fmt is None:
        return "no format"
    return f"format {shown(fmt)}, version {shown(version)}"


def first_difference(expected: Any, found: Any, at: str = "") -> tuple[str, Any, Any] | None:
    """The first place where ``found`` differs from ``expected``: ``(path, expected, found)``, or ``None``.

    The path reads like the data's keys, e.g. ``['seeds']`` or ``['problems']['a']['N']``; a key
    missing on one side shows as ``None`` there.  Values compare as ``==`` does (``None`` exactly
    when ``expected == found``).
    """
    if isinstance(expected, Mapping) and isinstance(found, Mapping):
        for k in [*expected, *(k for k in found if k not in expected)]:
            diff = first_difference(expected.get(k), found.get(k), f"{at}[{k!r}]")
            if diff is not None:
                return diff
        return None
    if isinstance(expected, list) and isinstance(found, list) and len(expected) == len(found):
        for i, (e, f) in enumerate(zip(expected, found)):
            diff = first_difference(e, f, f"{at}[{i}]")
            if diff is not None:
                return diff
        return None
    return None if expected == found else (at, expected, found)


_Key = str | tuple[str, ...]
#: What :meth:`ResultsFile.load` returns when nothing is resumed: the new data (or ``None``).
_New = TypeVar("_New", bound=dict[str, Any] | None)
#: What an identity key is called in a refusal, unless the caller says otherwise.
_LABELS = {"config": "configuration", "source": "source file"}


def _get(data: Mapping[str, Any], key: _Key) -> Any:
    """``data[key]``, following a tuple of keys into nested objects; ``None`` where one is missing."""
    value: Any = data
    for k in (key,) if isinstance(key, str) else key:
        value = value.get(k) if isinstance(value, Mapping) else None
    return value


class ResultsFile:
    """One JSON results file of a command: read, resumed or refused, and saved atomically.

    Parameters
    ----------
    path
        The file.
    fmt, version
        Its format (``"loracheck.<kind>"``) and version: what :meth:`new` writes and what
        :meth:`read` expects.
    what
        The argument that names the file, quoted in every error (``"out"``, ``"--out"``, ``"json"``).
    noun
        What the file is, for the error of a file that cannot be read as JSON (``"a speed file"``:
        ``out: 'speed.json' is not a speed file (out: expected JSON data ...)``); ``None``: the
        error of :func:`verify.jsonfile.read_json` as it is.
    hint
        What the user can do about a refused file, appended to every refusal (``""``: nothing).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fmt: str,
        version: int,
        what: str = "out",
        noun: str | None = "a results file",
        hint: str = "use fresh (--fresh) or another path",
    ) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.version = version
        self.what = what
        self.noun = noun
        self.hint = hint

    def new(self, **fields: Any) -> dict[str, Any]:
        """The data of a new file: ``format`` and ``version`` first, then ``fields``."""
        return {"format": self.fmt, "version": self.version, **fields}

    def _refuse(self, message: str) -> UserInputError:
        return UserInputError(f"{message}; {self.hint}" if self.hint else message)

    def _read_json(self) -> Any:
        try:
            return read_json(self.path, what=self.what)  # size and depth bounded
        except UserInputError as exc:
            if self.noun is None:
                raise self._refuse(str(exc)) from None
            raise self._refuse(f"{self.what}: {str(self.path)!r} is not {self.noun} ({exc})") from None

    def _ours(self, data: Any) -> bool:
        """Whether ``data`` is of this format at this version (an int: ``true`` or ``1.0`` is not 1)."""
        fmt, version = saved_format(data)
        return fmt == self.fmt and type(version) is int and version == self.version

    def read(self) -> dict[str, Any]:
        """The file's data, in the current spelling (:func:`current_spelling`).

        Refused with :class:`~theory.errors.UserInputError` naming :attr:`what` and the file:
        anything :func:`verify.jsonfile.read_json` refuses (missing, not a regular file, too large,
        not JSON, too deep), and data of another format or version (the message quotes the
        expected and the found ones).
        """
        return self._checked(self._read_json())

    def _checked(self, data: Any) -> dict[str, Any]:
        if not self._ours(data):
            raise self._refuse(
                f"{self.what}: expected a file of format {self.fmt!r}, version {self.version} in "
                f"{str(self.path)!r}, got {_found(data)}"
            )
        return current_spelling(data)

    def load(
        self,
        new: _New,
        *,
        identity: Sequence[_Key] = (),
        fresh: bool = False,
        contents: str = "results",
        labels: Mapping[str, str] | None = None,
        upgrade: Callable[[dict[str, Any]], object] | None = None,
        resumable: Callable[[dict[str, Any]], bool] | None = None,
        check: Callable[[dict[str, Any], str], object] | None = None,
        other: Literal["refuse", "replace"] = "refuse",
    ) -> dict[str, Any] | _New:
        """The data to go on with: the file's, to resume, or ``new`` (``fresh``, or no file there).

        Parameters
        ----------
        new
            The data of a new file (:meth:`new`), or ``None``; returned when nothing is resumed.
        identity
            Keys (a key, or a tuple of keys into nested objects) whose values must be the same in
            the file and in ``new``: what makes the results (``"config"``, ``("problem",
            "sha256")``).  A file that differs is refused, naming the first difference.
        fresh
            Start over: the file is not read (the next :meth:`save` replaces it).
        contents, labels
            Words for that refusal: the file "holds ``contents`` of another ``labels[key]``"
            (default: ``config`` is a "configuration", ``source`` a "source file", any other key
            itself).
        upgrade
            Called on the file's data (in place) before it is compared: the command's own
            normalisation of files of earlier releases.
        resumable
            Whether a file of the right format may be resumed at all (a finished report is not):
            when it says ``False``, ``new`` is returned.
        check
            The command's check of the fields a resumed run reads, called as ``check(data,
            where)`` with ``where`` naming the argument and the file (``out: 'kkr.json'``); its
            :class:`~theory.errors.UserInputError` is refused with :attr:`hint` appended.
        other
            ``"replace"``: a file of another format is not refused but replaced (one of this
            format at another version is refused all the same: it may hold a newer release's work)
            (``new`` is returned); one that cannot be read as JSON is refused all the same.
        """
        if self.path.exists() and not self.path.is_file():  # fresh or not: it could never be written
            raise UserInputError(
                f"{self.what}: expected a path for a results file, got {str(self.path)!r} "
                "(it exists and is not a regular file: a directory?)"
            )
        if fresh or not self.path.exists():
            return new
        if other == "replace":
            raw = self._read_json()
            if saved_format(raw)[0] != self.fmt:
                return new  # another kind of file (or not an object): replaced
            data = self._checked(raw)  # this kind at a version this release does not know: refused
        else:
            data = self.read()
        if upgrade is not None:
            upgrade(data)
        if resumable is not None and not resumable(data):
            return new
        for key in identity:
            diff = first_difference(_get(new if new is not None else {}, key), _get(data, key))
            if diff is not None:
                name = key if isinstance(key, str) else ".".join(key)
                label = {**_LABELS, **(labels or {})}.get(name, name)
                at, expected, found = diff
                raise self._refuse(
                    f"{self.what}: {str(self.path)!r} holds {contents} of another "
                    f"{label}{f' (at {at})' if at else ''}: "
                    f"expected {shown(expected)}, got {shown(found)}"
                )
        if check is not None:
            try:
                check(data, f"{self.what}: {str(self.path)!r}")
            except UserInputError as exc:
                raise self._refuse(str(exc)) from None
        return data

    def save(
        self, data: Mapping[str, Any], *, allow_nan: bool = False, default: Callable[[Any], Any] | None = None
    ) -> Path:
        """Write ``data`` as indented JSON, atomically (readers see the old file or the new one)."""
        text = json.dumps(data, indent=1, allow_nan=allow_nan, default=default) + "\n"
        return atomic_write_text(self.path, text)


def results_schema(
    title: str, fmt: str, version: int, *, required: Sequence[str], properties: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a results file with the common header.

    The header: ``format`` and ``version`` (constants), ``created`` (an ISO time), ``complete``
    (``false`` while the run goes on) and ``environment`` (versions, threads); then ``required``
    and ``properties`` of the kind.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "required": ["format", "version", "created", "complete", "environment", *required],
        "properties": {
            "format": {"const": fmt},
            "version": {"const": version},
            "created": {"type": "string"},
            "complete": {"type": "boolean"},
            "environment": {"type": "object"},
            **properties,
        },
    }
