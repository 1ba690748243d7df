"""The result store of a sweep: an append-only SQLite file of finished tasks, keyed by task hash.

Why SQLite (the standard library's ``sqlite3``) and not Parquet: a sweep appends one small
record per task, thousands of times, and must survive being killed at any instant.  SQLite
commits each record in its own transaction (write-ahead log, ``synchronous=FULL``): a record is
either entirely in the file or not at all, a killed writer never leaves a damaged file, readers
(a report, a progress monitor) can read while the sweep writes, and the whole store is one file
plus its log.  Parquet files are immutable once written: appending a task means a new file (or
rewriting one), so a long sweep would produce thousands of fragments or rewrite its history,
and a kill during a write leaves a truncated file.

Schema (format ``loracheck.sweep-store/1``; ``PRAGMA application_id`` = :data:`APPLICATION_ID`,
``PRAGMA user_version`` = 1)::

    meta(key TEXT PRIMARY KEY, value TEXT)
        format       loracheck.sweep-store/1
        config_hash  sha256 of the sweep's sorted task hashes (the sweep's identity)
        config       the normalized sweep configuration (JSON)
        name, task, tasks, created, loracheck_version
    tasks(hash TEXT PRIMARY KEY,     -- sha256 of the task's canonical spec
          idx INTEGER,               -- position in the sweep's expansion order
          spec TEXT,                 -- the task spec (canonical JSON)
          status TEXT,               -- 'finished' or 'failed'
          result TEXT,               -- the task's result (canonical JSON), NULL if failed
          error TEXT,                -- exception and traceback summary, NULL if finished
          seconds REAL,              -- wall time of the task on its worker
          worker TEXT,               -- 'host:pid' of the worker
          attempts INTEGER,          -- how many times the task was run into this store
          recorded_at REAL)          -- Unix time at which the coordinator committed it

While a sweep runs, the store is ``STORE`` plus SQLite's ``STORE-wal`` and ``STORE-shm``; a closed
store is the single file ``STORE`` (copy it as it is).  Guarantees: only the coordinating process
writes (an advisory lock on ``STORE.lock``, released by the operating system even when the
process is killed, refuses a second writer); each task is committed on arrival (tasks that
arrive together share one transaction, :meth:`SweepStore.transaction`); a ``finished``
record is never changed; a ``failed`` record is replaced by the next attempt's record.  Opening
checks the SQLite header, the application id, the format tag and SQLite's ``quick_check``, and
answers a foreign or damaged file with a :class:`StoreError`
that says so, never a bare ``sqlite3`` exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from theory.errors import UserInputError, finite_number, shown

__all__ = ["APPLICATION_ID", "FORMAT", "StoreError", "StoreWriteError", "SweepStore", "TaskRecord"]

FORMAT = "loracheck.sweep-store/1"
#: ``PRAGMA application_id`` of a store: the ASCII bytes "LCSW".
APPLICATION_ID = 0x4C435357
_USER_VERSION = 1
_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    hash TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('finished', 'failed')),
    result TEXT,
    error TEXT,
    seconds REAL NOT NULL,
    worker TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
"""

_UPSERT = """
INSERT INTO tasks (hash, idx, spec, status, result, error, seconds, worker, attempts, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
ON CONFLICT (hash) DO UPDATE SET
    idx = excluded.idx, spec = excluded.spec, status = excluded.status, result = excluded.result,
    error = excluded.error, seconds = excluded.seconds, worker = excluded.worker,
    attempts = tasks.attempts + 1, recorded_at = excluded.recorded_at
WHERE tasks.status = 'failed'
"""


class StoreError(UserInputError):
    """A store that cannot be used: missing, foreign, damaged, of another sweep, or in use."""


class StoreWriteError(RuntimeError):
    """A write to a usable store failed (an SQLite I/O error, a full disk): not bad input."""


def _write_failure(path: Path, what: str, exc: sqlite3.DatabaseError) -> Exception:
    """``StoreError`` when another process holds the store, else :class:`StoreWriteError`."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc):
        return StoreError(f"store: {str(path)!r} is in use by another process ({what}: SQLite: {exc})")
    return StoreWriteError(f"store: {str(path)!r}: {what} (SQLite: {exc})")


@dataclass(frozen=True)
class TaskRecord:
    """One row of a store: a task's spec and its outcome."""

    hash: str
    index: int
    spec: Mapping[str, Any]
    status: Literal["finished", "failed"]
    result: Mapping[str, Any] | None
    error: str | None
    seconds: float
    worker: str
    attempts: int
    recorded_at: float


class SweepStore:
    """An open result store (use :meth:`create` or :meth:`open`; a context manager).

    A writable store holds the lock file ``STORE.lock`` until :meth:`close`.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, *, readonly: bool, lock: Any = None) -> None:
        self.path = path
        self.readonly = readonly
        self._conn = conn
        self._lock = lock

    # ----------------------------------------------------------------------------------------
    # Opening
    # ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, meta: Mapping[str, str]) -> SweepStore:
        """Create a new store at ``path`` (which must not exist) with the ``meta`` entries.

        ``meta`` must hold ``config_hash``; ``format``, ``created`` and ``loracheck_version`` are
        added.  The schema and the meta entries are written in one transaction.
        """
        p = Path(path)
        if p.exists():
            raise StoreError(f"store: {str(p)!r} exists already (expected a new path)")
        if "config_hash" not in meta:
            raise UserInputError("meta: expected a 'config_hash' entry, got none")
        p.parent.mkdir(parents=True, exist_ok=True)
        lock = _acquire_lock(p)
        try:
            conn = sqlite3.connect(p, isolation_level=None)
            conn.executescript(
                f"PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {_USER_VERSION};"
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
            )
            entries = {
                **{str(k): str(v) for k, v in meta.items()},
                "format": FORMAT,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "loracheck_version": _version(),
            }
            conn.execute("BEGIN")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(entries.items()))
            conn.execute("COMMIT")
        except BaseException:
            _release_lock(lock)
            raise
        return cls(p, conn, readonly=False, lock=lock)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> SweepStore:
        """Open an existing store; check that it is one and that it is intact.

        Raises :class:`StoreError` when ``path`` is missing, is not an SQLite database, is an
        SQLite database of another application or another store format, fails SQLite's
        ``quick_check``, or (``readonly=False``) is being written by another process.
        """
        p = Path(path)
        if not p.is_file():
            raise StoreError(f"store: expected an existing sweep store file, got {str(p)!r} (no such file)")
        not_store = f"store: {str(p)!r} is not a loracheck sweep store"
        with open(p, "rb") as fh:
            head = fh.read(len(_HEADER))
        if not head:
            raise StoreError(f"{not_store} (an empty file)")
        if head != _HEADER:
            raise StoreError(f"{not_store} (not an SQLite database: the file starts with {head[:8]!r})")
        lock = None if readonly else _acquire_lock(p)
        conn = None
        try:
            if readonly:
                conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
            else:
                conn = sqlite3.connect(p, isolation_level=None)
            _check_store(conn, p, readonly=readonly)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            _release_lock(lock)
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(
                    f"store: {str(p)!r} is corrupted or not a loracheck sweep store (SQLite: {exc})"
                ) from None
            raise
        return cls(p, conn, readonly=readonly, lock=lock)

    def close(self) -> None:
        """Close the connection and release the lock (idempotent).

        A writer first leaves write-ahead-log mode, which folds the log into the database file:
        a closed store is that one file (if a reader holds it open, the log stays until later).
        """
        if not self.readonly and self._lock is not None:
            try:
                if self._conn.in_transaction:  # an interrupted write: nothing of it was committed
                    self._conn.execute("ROLLBACK")
                self._conn.execute("PRAGMA journal_mode = DELETE")
            except sqlite3.Error:
                pass
        self._conn.close()
        _release_lock(self._lock)
        self._lock = None

    def __enter__(self) -> SweepStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store: {str(self.path)!r} could not be read (SQLite: {exc})") from None

    @property
    def meta(self) -> dict[str, str]:
        """The meta entries (``format``, ``config_hash``, ``config``, ``name``, ...)."""
        return dict(self._query("SELECT key, value FROM meta"))

    @property
    def config_hash(self) -> str:
        """The identity of the sweep this store belongs to."""
        return self.meta["config_hash"]

    def counts(self) -> dict[str, int]:
        """Number of records per status: ``{"finished": n, "failed": m}``."""
        out = {"finished": 0, "failed": 0}
        out.update(dict(self._query("SELECT status, COUNT(*) FROM tasks GROUP BY status")))
        return out

    def hashes(self, status: Literal["finished", "failed"] = "finished") -> set[str]:
        """Hashes of the tasks with this status."""
        return {r[0] for r in self._query("SELECT hash FROM tasks WHERE status = ?", (status,))}

    def records(self, status: Literal["finished", "failed"] | None = None) -> list[TaskRecord]:
        """All records (or those with ``status``) in the sweep's expansion order."""
        return list(self.iter_records(status))

    def iter_records(self, status: Literal["finished", "failed"] | None = None) -> Iterator[TaskRecord]:
        """Like :meth:`records`, one at a time."""
        cols = "hash, idx, spec, status, result, error, seconds, worker, attempts, recorded_at"
        if status is None:
            rows = self._query(f"SELECT {cols} FROM tasks ORDER BY idx, hash")
        else:
            rows = self._query(f"SELECT {cols} FROM tasks WHERE status = ? ORDER BY idx, hash", (status,))
        for h, idx, spec, st, result, error, seconds, worker, attempts, at in rows:
            # a store is a file someone may have edited: every column is checked, not trusted
            try:
                spec_d = json.loads(spec)
                result_d = None if result is None else json.loads(result)
            except (TypeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                raise StoreError(
                    f"store: {str(self.path)!r}: task {shown(h)}: expected JSON in spec and result ({exc})"
                ) from None
            numbers = {"idx": idx, "seconds": seconds, "attempts": attempts, "recorded_at": at}
            for name, v in numbers.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite_number(v):
                    raise StoreError(
                        f"store: {str(self.path)!r}: task {shown(h)}: column {name}: expected a number, "
                        f"got {shown(v)}"
                    )
            if st not in ("finished", "failed") or not isinstance(h, str):
                raise StoreError(
                    f"store: {str(self.path)!r}: task {shown(h)}: expected a text hash and the status "
                    f"'finished' or 'failed', got {shown(st)}"
                )
            yield TaskRecord(
                hash=h,
                index=int(idx),
                spec=spec_d,
                status="finished" if st == "finished" else "failed",
                result=result_d,
                error=error,
                seconds=float(seconds),
                worker=worker,
                attempts=int(attempts),
                recorded_at=float(at),
            )

    # ----------------------------------------------------------------------------------------
    # Writing (the coordinating process only)
    # ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group the :meth:`record` calls of the body into one transaction (one commit, one fsync).

        Either every record of the body is committed or, if the body raises (or the process dies),
        none is.  Outside a transaction each :meth:`record` commits on its own.
        """
        if self.readonly:
            raise StoreError(f"store: {str(self.path)!r} was opened read-only")
        if self._conn.in_transaction:
            # left open by an interrupt (Ctrl-C, SIGTERM) between BEGIN and the body: nothing of it
            # was committed, and transactions here never nest
            self._conn.execute("ROLLBACK")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise _write_failure(self.path, "could not begin a write", exc) from None
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise _write_failure(self.path, "could not commit", exc) from None

    def record(
        self,
        *,
        key: str,
        index: int,
        spec: str,
        status: Literal["finished", "failed"],
        result: str | None,
        error: str | None,
        seconds: float,
        worker: str,
    ) -> bool:
        """Commit the outcome of the task with hash ``key``; ``False`` if it was finished already.

        ``spec`` and ``result`` are canonical JSON texts.  A finished record is never replaced;
        a failed one is replaced (its ``attempts`` counted up).
        """
        if self.readonly:
            raise StoreError(f"store: {str(self.path)!r} was opened read-only")
        if status not in ("finished", "failed"):
            raise UserInputError(f"status: expected 'finished' or 'failed', got {status!r}")
        if (status == "finished") != (result is not None):
            raise UserInputError("result: expected a JSON text for a finished task and None for a failed one")
        try:
            cur = self._conn.execute(
                _UPSERT, (key, index, spec, status, result, error, float(seconds), worker, time.time())
            )
        except sqlite3.DatabaseError as exc:
            raise _write_failure(self.path, f"could not record task {key}", exc) from None
        return cur.rowcount > 0


def _check_store(conn: sqlite3.Connection, p: Path, *, readonly: bool) -> None:
    not_store = f"store: {str(p)!r} is not a loracheck sweep store"
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    if app != APPLICATION_ID:
        raise StoreError(
            f"{not_store} (an SQLite database of another application: application_id {app}, "
            f"expected {APPLICATION_ID})"
        )
    check = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if check != ["ok"]:
        found = "; ".join(check[:3]).replace("\n", "; ")
        raise StoreError(
            f"store: {str(p)!r} is corrupted (SQLite quick_check: {found}); "
            "its finished tasks may be partly readable with the sqlite3 shell's .recover"
        )
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"meta", "tasks"} <= tables:
        raise StoreError(f"{not_store} (tables {sorted(tables)}, expected meta and tasks)")
    fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    if fmt is None or fmt[0] != FORMAT:
        got = None if fmt is None else fmt[0]
        raise StoreError(f"store: {str(p)!r} has format {got!r}; this loracheck reads {FORMAT!r}")
    if not readonly:
        conn.executescript("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("loracheck")
    except Exception:  # pragma: no cover - not installed as a distribution
        return "unknown"


def _acquire_lock(path: Path) -> Any:
    """Hold an exclusive advisory lock on ``PATH.lock`` (POSIX; elsewhere no lock is taken)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    lock_path = path.with_name(path.name + ".lock")
    fh = open(lock_path, "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise StoreError(
            f"store: {str(path)!r} is being written by another running sweep (lock {str(lock_path)!r}); "
            "wait for it to finish or stop it"
        ) from None
    return fh


def _release_lock(lock: Any) -> None:
    if lock is not None:
        lock.close()
