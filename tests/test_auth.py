"""API tokens and roles: stored hashed, shown once, checked in one place (require)."""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from central.auth import TokenStore, hash_token, role_rank
from provisioning.cli import app as cli_app
from tests.opsdb import BACKENDS, build_central, open_backend

READS = ["/api/v1/alerts", "/api/v1/stats", "/api/v1/warnings", "/api/v1/sites", "/api/v1/assets"]


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    yield from open_backend(request.param, tmp_path)


@pytest.fixture
def sqlite_db(tmp_path):
    yield from open_backend("sqlite", tmp_path)


def test_tokens_are_stored_hashed_and_revocable(db):
    tokens = TokenStore(db, clock=lambda: 1000.0)
    record, token = tokens.create("dashboard", "viewer")
    assert token.startswith("slt_") and len(token) > 40
    stored = [r[0] for r in db.execute("SELECT token_hash FROM api_tokens").fetchall()]
    assert stored == [hashlib.sha256(token.encode()).hexdigest()] == [hash_token(token)]
    assert token not in str(db.execute("SELECT * FROM api_tokens").fetchall())
    assert tokens.lookup(token) == record
    assert tokens.lookup(token + "x") is None
    assert tokens.revoke(record.id) is True
    assert tokens.revoke(record.id) is False
    assert tokens.lookup(token) is None
    assert tokens.list()[0].revoked_at == 1000.0
    with pytest.raises(ValueError):
        tokens.create("x", "root")  # type: ignore[arg-type]


def test_two_tokens_never_collide(db):
    tokens = TokenStore(db)
    values = {tokens.create(f"t{i}", "viewer")[1] for i in range(50)}
    assert len(values) == 50


@pytest.mark.parametrize("path", READS)
def test_without_anonymous_reads_need_a_token(sqlite_db, path):
    central = build_central(sqlite_db)
    refused = central.client.get(path)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert central.client.get(path, headers=central.as_role("viewer")).status_code == 200
    assert central.client.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", READS)
def test_anonymous_viewer_reads_but_never_writes(sqlite_db, path):
    central = build_central(sqlite_db, anonymous_role="viewer")
    assert central.client.get(path).status_code == 200
    assert central.client.put("/api/v1/sites/s1", json={}).status_code == 401
    assert central.client.post("/api/v1/warnings/w-1/ack").status_code == 401
    assert central.client.get("/api/v1/audit").status_code == 401
    assert central.client.get("/api/v1/tokens").status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "role"),
    [
        ("post", "/api/v1/warnings/w-none/ack", None, "operator"),
        ("post", "/api/v1/warnings/w-none/assign", {"assignee": "kim"}, "operator"),
        ("post", "/api/v1/warnings/w-none/clear", {"reason": "x"}, "operator"),
        ("put", "/api/v1/sites/s1", {"name": "S"}, "admin"),
        ("put", "/api/v1/assets/a1", {"name": "A"}, "admin"),
        ("delete", "/api/v1/assets/a1", None, "admin"),
        ("put", "/api/v1/bindings/gw/d1", {"asset": "a1"}, "admin"),
        ("get", "/api/v1/audit", None, "admin"),
        ("get", "/api/v1/tokens", None, "admin"),
        ("post", "/api/v1/tokens", {"name": "n", "role": "viewer"}, "admin"),
    ],
)
def test_roles_are_ordered_viewer_operator_admin(sqlite_db, method, path, body, role):
    central = build_central(sqlite_db, anonymous_role="viewer")
    for who in ("viewer", "operator", "admin"):
        response = central.client.request(method, path, json=body, headers=central.as_role(who))
        if role_rank(who) >= role_rank(role):
            assert response.status_code not in (401, 403), (who, response.text)
        else:
            assert response.status_code == 403, (who, response.text)
            assert f"needs role '{role}'" in response.json()["detail"]


def test_bad_and_revoked_tokens_are_refused_even_with_anonymous_reads(sqlite_db):
    central = build_central(sqlite_db, anonymous_role="viewer")
    bad = {"Authorization": "Bearer slt_not-a-token"}
    assert central.client.get("/api/v1/alerts", headers=bad).status_code == 401
    basic = {"Authorization": "Basic dXNlcjpwdw=="}
    assert central.client.get("/api/v1/alerts", headers=basic).status_code == 401
    record = central.auth.tokens.lookup(central.tokens["admin"])
    assert record is not None
    revoke = central.client.delete(f"/api/v1/tokens/{record.id}", headers=central.as_role("admin"))
    assert revoke.status_code == 200 and revoke.json()["revoked_at"] is not None
    assert central.client.get("/api/v1/alerts", headers=central.as_role("admin")).status_code == 401


def test_query_token_counts_for_get_only(sqlite_db):
    central = build_central(sqlite_db)
    token = central.tokens["admin"]
    assert central.client.get(f"/api/v1/alerts?access_token={token}").status_code == 200
    assert central.client.get("/api/v1/alerts?access_token=wrong").status_code == 401
    write = central.client.put(f"/api/v1/sites/s1?access_token={token}", json={"name": "S"})
    assert write.status_code == 401


def test_token_api_shows_the_value_once_and_audits(sqlite_db):
    central = build_central(sqlite_db)
    admin = central.as_role("admin")
    created = central.client.post(
        "/api/v1/tokens", json={"name": "ops", "role": "operator"}, headers=admin
    )
    assert created.status_code == 201
    body = created.json()
    new = {"Authorization": f"Bearer {body['token']}"}
    assert central.client.get("/api/v1/warnings", headers=new).status_code == 200
    listed = central.client.get("/api/v1/tokens", headers=admin).json()
    assert body["id"] in [t["id"] for t in listed]
    assert body["token"] not in str(listed) and all("token" not in t for t in listed)
    audit = central.client.get("/api/v1/audit?action=token.create", headers=admin).json()
    assert [(e["actor"], e["target"]) for e in audit] == [("admin-1", body["id"])]
    assert body["token"] not in str(audit)


def test_cli_token_create_list_revoke(tmp_path):
    config = tmp_path / "central.yaml"
    config.write_text("storage: {url: 'sqlite:///central.db'}\n")
    runner = CliRunner()
    base = ["central", "token"]
    made = runner.invoke(
        cli_app, [*base, "create", "--name", "ci", "--role", "admin", "-c", str(config)]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("slt_")
    listed = runner.invoke(cli_app, [*base, "list", "-c", str(config)])
    assert "\tadmin\tlive\t" in listed.stdout and token not in listed.stdout
    token_id = listed.stdout.split("\t")[0]
    revoked = runner.invoke(cli_app, [*base, "revoke", token_id, "-c", str(config)])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert "\trevoked\t" in runner.invoke(cli_app, [*base, "list", "-c", str(config)]).stdout
    bad = runner.invoke(
        cli_app, [*base, "create", "--name", "x", "--role", "root", "-c", str(config)]
    )
    assert bad.exit_code == 2
    missing = runner.invoke(cli_app, [*base, "revoke", "tok-nope", "-c", str(config)])
    assert missing.exit_code == 1
