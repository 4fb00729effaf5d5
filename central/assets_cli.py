"""`sentryline central assets …` and `sentryline central token …`: the registry and API
tokens, straight on central's database (the service need not run)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import typer

from provisioning.clitools import config_or_exit

assets_app = typer.Typer(help="Sites, assets and device bindings.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (viewer, operator, admin).", no_args_is_help=True)

ConfigOption = typer.Option(..., "--config", "-c", help="central YAML file")


def register(app: typer.Typer) -> None:
    """Add ``assets`` and ``token`` to central's CLI."""
    app.add_typer(assets_app, name="assets")
    app.add_typer(token_app, name="token")


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _database(config: Path):
    from central.config import load_central_config
    from central.db import open_database

    cfg = config_or_exit(load_central_config, config)
    db = open_database(cfg.storage.url)
    db.script(resources.files("central").joinpath("schema_ops.sql").read_text())
    return db


@assets_app.command("import")
def import_assets(
    file: Path = typer.Argument(..., help="YAML ({sites: [...], assets: [...]}) or CSV file"),
    config: Path = ConfigOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="check and report, write nothing"),
) -> None:
    """Create or update sites and assets (and bind their devices) from a file, all or nothing.

    A running central sees the change within a few seconds.
    """
    from central.registry import RegistryStore
    from central.registry_import import apply_import, plan_import, read_registry_file

    data = config_or_exit(read_registry_file, file)
    db = _database(config)
    try:
        store = RegistryStore(db)
        plan = plan_import(store, data)
        verb = "would" if dry_run else "will"
        typer.echo(
            f"{file}: {len(plan.sites)} site(s); assets: {len(plan.created)} new,"
            f" {len(plan.updated)} changed, {len(plan.unchanged)} unchanged"
        )
        for line in plan.rebound:
            typer.echo(f"  device {verb} move: {line}")
        if dry_run:
            typer.echo("dry run: nothing written")
            return
        from central.audit import AuditLog

        with db.transaction():
            apply_import(store, plan)
            AuditLog(db).record(
                _actor(),
                "registry.import",
                str(file),
                None,
                {"sites": [s.id for s in plan.sites], "assets": [a.id for a in plan.assets]},
            )
        typer.echo("imported")
    finally:
        db.close()


@assets_app.command("list")
def list_assets(config: Path = ConfigOption) -> None:
    """Every asset with its site, type and bound devices."""
    from central.registry import RegistryStore

    db = _database(config)
    try:
        store = RegistryStore(db)
        bindings = store.bindings()
        for asset in store.assets():
            devices = " ".join(sorted(r for r, a in bindings.items() if a == asset.id)) or "-"
            typer.echo(f"{asset.id}\t{asset.site or '-'}\t{asset.type}\t{devices}")
    finally:
        db.close()


@token_app.command("create")
def create_token(
    name: str = typer.Option(..., "--name", help="who or what uses it"),
    role: str = typer.Option(..., "--role", help="viewer, operator or admin"),
    config: Path = ConfigOption,
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    from central.audit import AuditLog
    from central.auth import ROLES, TokenStore

    if role not in ROLES:
        typer.echo(f"error: --role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    db = _database(config)
    try:
        with db.transaction():
            record, token = TokenStore(db).create(name, role)  # type: ignore[arg-type]
            AuditLog(db).record(_actor(), "token.create", record.id, None, {"role": role})
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        db.close()
    typer.echo(f"created {record.id} ({record.role}) for '{record.name}'", err=True)
    typer.echo("the token is shown once; store it now:", err=True)
    typer.echo(token)


@token_app.command("list")
def list_tokens(config: Path = ConfigOption) -> None:
    """Tokens (never their values)."""
    from datetime import UTC, datetime

    from central.auth import TokenStore

    db = _database(config)
    try:
        for t in TokenStore(db).list():
            created = datetime.fromtimestamp(t.created_at, UTC).isoformat(timespec="seconds")
            state = "revoked" if t.revoked_at is not None else "live"
            typer.echo(f"{t.id}\t{t.role}\t{state}\t{created}\t{t.name}")
    finally:
        db.close()


@token_app.command("revoke")
def revoke_token(
    token_id: str = typer.Argument(..., help="the token's id (from 'token list')"),
    config: Path = ConfigOption,
) -> None:
    """Revoke a token: requests carrying it are refused from now on."""
    from central.audit import AuditLog
    from central.auth import TokenStore

    db = _database(config)
    try:
        store = TokenStore(db)
        if store.get(token_id) is None:
            typer.echo(f"error: no token '{token_id}'", err=True)
            raise typer.Exit(1)
        with db.transaction():
            revoked = store.revoke(token_id)
            if revoked:
                AuditLog(db).record(_actor(), "token.revoke", token_id, None, None)
    finally:
        db.close()
    typer.echo(f"revoked {token_id}" if revoked else f"{token_id} was already revoked")
