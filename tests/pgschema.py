"""A private PostgreSQL schema per test on the real server (127.0.0.1:5432, database test).

Each test gets ``postgresql://…?options=-csearch_path=<schema>``: every connection made from
that URL (workers, benches) lands in the same fresh schema, which is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

PG_SERVER = os.environ.get("SENTRYLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def schema_url(schema: str, server: str = PG_SERVER) -> str:
    sep = "&" if "?" in server else "?"
    return f"{server}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def private_schema(prefix: str = "t") -> Iterator[str]:
    """Create a uniquely named schema, yield its URL, drop it (and all in it) afterwards."""
    import psycopg

    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(schema)
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
