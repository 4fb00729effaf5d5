"""Databases for the operations-layer tests (registry, tokens, audit, incidents, lifecycle):
SQLite in tmp_path, or the real PostgreSQL in a private schema (tests/pgschema.py) that is
dropped afterwards, so parallel runs cannot collide. Each test module declares its own
fixture over ``open_backend`` (parametrised by ``BACKENDS``)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from central.db import Database, open_database
from tests.pgschema import private_schema

BACKENDS = ["sqlite", "postgresql"]


def apply_schemas(db: Database) -> None:
    for name in ("schema.sql", "schema_ops.sql"):
        db.script(resources.files("central").joinpath(name).read_text())


def open_backend(backend: str, tmp_path: Path) -> Iterator[Database]:
    """A Database with both schema files applied; closed (and dropped) afterwards."""
    if backend == "sqlite":
        db = open_database(f"sqlite:///{tmp_path / 'ops.db'}")
        apply_schemas(db)
        yield db
        db.close()
        return
    with private_schema("t_ops") as url:
        db = open_database(url)
        apply_schemas(db)
        try:
            yield db
        finally:
            db.close()
