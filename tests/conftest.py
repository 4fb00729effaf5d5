"""Shared fixtures: a real Mosquitto broker per test session and the CAP 1.2 schema."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class MosquittoProcess:
    """One Mosquitto process on a free loopback port; restartable for fault tests."""

    def __init__(self, workdir: Path, persistence: bool = False) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # As root, Mosquitto drops to user 'mosquitto', which cannot write its
            # persistence file into pytest's private temp dirs: stay the invoking user.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            + (
                f"persistence true\npersistence_location {workdir}/\n"
                if persistence
                else "persistence false\n"
            )
            + "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "mosquitto.log", "ab"),  # noqa: SIM115
        )
        _wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory) -> Iterator[MosquittoProcess]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert Path(binary).exists(), "mosquitto not installed: run `make test` (it installs it)"
    broker = MosquittoProcess(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()
