"""Loopback helpers for starting local processes (demo, fault rig, tests)."""

from __future__ import annotations

import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def stop_process(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
    """Signal this one child (by its PID), then SIGKILL it if it does not go in time."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


class Mosquitto:
    """A private Mosquitto on a free loopback port (demo, tests, benches, fault rig).

    ``set_tcp_nodelay`` always: without it QoS 1 stalls ~40 ms behind Nagle. ``persistence``
    keeps sessions across a restart, as a production broker should.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        max_inflight: int | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("Mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            # As root, Mosquitto drops to user 'mosquitto', which cannot write a persistence
            # file into a private temp dir: stay the invoking user.
            f"user {getpass.getuser()}",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "max_queued_messages 1000000",
            *([f"max_inflight_messages {max_inflight}"] if max_inflight else []),
            *(
                ["persistence true", f"persistence_location {workdir}/"]
                if persistence
                else ["persistence false"]
            ),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            wait_for_port(self.port, 10)
        except BaseException:
            self.stop()
            raise

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process this object started (SIGKILL for a crash), by its PID."""
        proc, self.proc = self.proc, None
        stop_process(proc, sig, 5)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
