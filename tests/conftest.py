"""Shared fixtures: a real Mosquitto broker per test session and the CAP 1.2 schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.localnet import Mosquitto, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("SENTRYLINE_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def cap_schema():
    """The official OASIS CAP 1.2 XSD from ../shared/standards (never skipped: CI has it)."""
    from lxml import etree

    path = _shared_dir() / "standards" / "CAP-v1.2.xsd"
    assert path.is_file(), f"CAP schema not found at {path} (set SENTRYLINE_SHARED)"
    return etree.XMLSchema(etree.parse(str(path)))


@pytest.fixture(scope="session")
def assert_valid_cap(cap_schema):
    """Validate CAP XML bytes against the XSD and the spec rules the XSD cannot express."""
    from lxml import etree

    from central.cap import check_cap_rules

    def check(xml: bytes) -> None:
        cap_schema.assertValid(etree.fromstring(xml))
        problems = check_cap_rules(xml)
        assert not problems, problems

    return check


__all__ = ["MosquittoProcess", "free_port"]


# The tests' broker is the product's launcher (provisioning/localnet.py).
MosquittoProcess = Mosquitto


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory) -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()
