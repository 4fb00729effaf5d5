"""One small database interface for SQLite and PostgreSQL (psycopg 3).

Every statement in central is written once, with ``?`` placeholders and portable SQL
(``ON CONFLICT … DO …``, no AUTOINCREMENT, types TEXT / BIGINT / INTEGER / DOUBLE PRECISION).
On PostgreSQL ``?`` becomes ``%s``; nothing else is rewritten, so a statement that only one
dialect understands must branch on ``db.dialect`` where it is written.

Usage::

    db = open_database("sqlite:///central.db")      # or "postgresql://127.0.0.1/test"
    with db.transaction():
        db.execute("INSERT INTO t (a) VALUES (?)", (1,))
    rows = db.execute("SELECT a FROM t").fetchall()
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]


class Rows(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    dialect: Dialect
    url: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def script(self, sql: str) -> None:
        """Run several ``;``-separated DDL statements (schema files)."""

    def columns(self, table: str) -> set[str]: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Commit on success, roll back on error; nested calls join the outer transaction."""

    def close(self) -> None: ...


class SqliteDatabase:
    dialect: Dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit outside explicit transactions; one connection shared by the service's
        # event loop and the API (both on one thread, or serialised by the lock below).
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._lock = threading.RLock()
        self._depth = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._lock:
            return self._conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._conn.executemany(sql, rows)

    def script(self, sql: str) -> None:
        with self._lock:
            self._conn.executescript(sql)

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self.execute(f"PRAGMA table_info({table})")}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_PLACEHOLDER = re.compile(r"\?")


def to_pyformat(sql: str) -> str:
    """``?`` → ``%s`` (a literal ``%`` is doubled first, as psycopg requires)."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


class PostgresDatabase:
    dialect: Dialect = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg  # imported here: SQLite deployments never load it

        self.url = url
        self._conn = psycopg.connect(url, autocommit=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._tx: contextlib.AbstractContextManager[Any] | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._lock:
            return self._conn.execute(to_pyformat(sql), tuple(params))  # type: ignore[return-value]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if not rows:
            return
        with self._lock, self._conn.cursor() as cursor:
            cursor.executemany(to_pyformat(sql), rows)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Bulk insert with ``COPY … FROM STDIN``: several times faster than ``executemany``
        for thousands of rows (central's readings). Plain inserts only: no ON CONFLICT."""
        with (
            self._lock,
            self._conn.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def script(self, sql: str) -> None:
        with self._lock:
            for statement in _split_statements(sql):
                self._conn.execute(statement)  # type: ignore[arg-type]

    def columns(self, table: str) -> set[str]:
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            (table.lower(),),
        )
        return {r[0] for r in rows}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                with self._conn.transaction():
                    yield
            finally:
                self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _split_statements(sql: str) -> list[str]:
    """Split a schema file on ``;`` at line ends, dropping ``--`` comments."""
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def open_database(url: str) -> Database:
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise ValueError(f"unsupported database URL '{url}' (sqlite:///PATH or postgresql://…)")
