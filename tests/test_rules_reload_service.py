"""The running service reloads its rule sets: rules_dir reaches the pipeline, the admin API
reloads (a bad file answers 422 and keeps the rules in force), `central run` refuses a bad
rules_dir at start with file:line."""

from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient

from central.config import CentralConfig
from central.service import CentralService

GOOD = "type: gas\nrules:\n  - {kind: toxic_threshold, id: h2s, levels: {yellow: 7, orange: 14}}\n"
BROKEN = "type: gas\nrules:\n  - {kind: toxic_threshold, id: h2s,\n"


def _service(tmp_path, rules_dir) -> CentralService:
    config = CentralConfig.model_validate(
        {
            "storage": {"url": f"sqlite:///{tmp_path / 'central.db'}"},
            "rules_dir": str(rules_dir),
        }
    )
    return CentralService(config)


def test_admin_api_reloads_rules_and_refuses_a_broken_file(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "gas.yaml").write_text(GOOD)
    service = _service(tmp_path, rules)
    assert service.pipeline.rules_dir == rules
    admin = service.auth.tokens.create("ops", "admin")[1]
    viewer = service.auth.tokens.create("screen", "viewer")[1]
    client = TestClient(service.app)
    url = "/api/v1/rules/reload"
    assert client.post(url, headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
    ok = client.post(url, headers={"Authorization": f"Bearer {admin}"})
    assert ok.status_code == 200 and ok.json() == {"reloaded": True, "problems": []}
    (rules / "gas.yaml").write_text(BROKEN)
    bad = client.post(url, headers={"Authorization": f"Bearer {admin}"})
    assert bad.status_code == 422 and "gas.yaml" in bad.json()["detail"]
    service.store.close()


def test_central_run_refuses_a_broken_rules_dir_with_its_location(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "gas.yaml").write_text(BROKEN)
    config = tmp_path / "central.yaml"
    config.write_text(f"storage:\n  url: sqlite:///central.db\nrules_dir: {rules}\n")
    done = subprocess.run(
        [sys.executable, "-m", "provisioning.cli", "central", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "gas.yaml:" in done.stderr
