"""Databases for the operations-layer tests: SQLite in tmp_path, or the real PostgreSQL in a
schema of its own (created per test, dropped afterwards) so parallel runs cannot collide."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from central.db import Database, open_database

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


def _ops_schema(db: Database) -> None:
    db.script(resources.files("central").joinpath("schema_ops.sql").read_text())


def _core_schema(db: Database) -> None:
    db.script(resources.files("central").joinpath("schema.sql").read_text())


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def open_backend(backend: str, tmp_path: Path) -> Iterator[Database]:
    """Both schema files applied; yields the Database and cleans up afterwards."""
    if backend == "sqlite":
        db = open_database(f"sqlite:///{tmp_path / 'ops.db'}")
        _core_schema(db)
        _ops_schema(db)
        yield db
        db.close()
        return
    import psycopg

    schema = f"t_ops_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:  # the real server is part of the test setup
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            db = open_database(f"{PG_URL}?options=-csearch_path%3D{schema}")
            _core_schema(db)
            _ops_schema(db)
            yield db
            db.close()
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=BACKENDS)
def ops_db(request, tmp_path) -> Iterator[Database]:
    yield from open_backend(request.param, tmp_path)
