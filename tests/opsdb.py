"""Databases for the operations-layer tests (registry, tokens, audit, incidents, lifecycle):
SQLite in tmp_path, or the real PostgreSQL in a private schema (tests/pgschema.py) that is
dropped afterwards, so parallel runs cannot collide. Each test module declares its own
fixture over ``open_backend`` (parametrised by ``BACKENDS``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from central.api import create_app
from central.auth import ROLES, Authenticator, TokenStore
from central.config import AssetConfig, CapConfig
from central.db import Database, open_database
from central.registry import AssetRegistry
from central.store import Store
from central.warnings import WarningManager
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


@dataclass
class Central:
    """The API over a real store, the way central/service.py wires it, plus a token per role."""

    store: Store
    registry: AssetRegistry
    warnings: WarningManager
    auth: Authenticator
    app: FastAPI
    client: TestClient
    tokens: dict[str, str]  # role -> token

    def as_role(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def build_central(
    db: Database,
    assets: Sequence[AssetConfig] = (),
    anonymous_role: str = "none",
    clock: Callable[[], float] = time.time,
) -> Central:
    store = Store(db)
    registry = AssetRegistry(assets, {}, db=store.db)
    warnings = WarningManager(store, CapConfig(utc_offset="+08:00"), registry.info, clock)
    auth = Authenticator(TokenStore(store.db), anonymous_role)  # type: ignore[arg-type]
    app = create_app(store, {"messages": 0}, registry=registry, warnings=warnings, auth=auth)
    tokens = {role: auth.tokens.create(f"{role}-1", role)[1] for role in ROLES}
    return Central(store, registry, warnings, auth, app, TestClient(app), tokens)
