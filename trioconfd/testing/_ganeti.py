"""Running Ganeti's own ``ganeti-confd`` daemon unprivileged, for tests and benchmarks.

Every path the daemon uses is under ``$GANETI_ROOTDIR``, so each daemon gets a
directory of its own, its configuration and its key; it needs no root and no
cluster. Debian's ``ganeti-haskell-3.0`` package provides it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..client import open_confd_client
from ..protocol import ConfdError, RequestType

#: Where Debian's ganeti-haskell-3.0 puts the daemon.
DEBIAN_GANETI_CONFD = "/usr/lib/ganeti/3.0/usr/sbin/ganeti-confd"


class GanetiConfdError(ConfdError):
    """The real daemon could not be found or started."""


def find_ganeti_confd() -> str | None:
    """The daemon's path: ``$TRIOCONFD_GANETI_CONFD``, Debian's path, or ``$PATH``."""
    candidates = [os.environ.get("TRIOCONFD_GANETI_CONFD"), DEBIAN_GANETI_CONFD]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("ganeti-confd")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free on ``host`` a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class GanetiConfd:
    """A running ``ganeti-confd``: where it listens and where its files are."""

    host: str
    port: int
    root: Path
    process: trio.Process

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def data_dir(self) -> Path:
        return self.root / "var/lib/ganeti"

    @property
    def log_path(self) -> Path:
        return self.root / "var/log/ganeti/conf-daemon.log"

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Replace ``config.data`` atomically; the daemon reloads it (inotify)."""
        _write_atomically(self.data_dir / "config.data", json.dumps(config).encode())

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def wait_for_serial(self, key: bytes, serial: int, timeout: float = 10.0) -> None:
        """Wait until the daemon answers from a configuration with cluster ``serial``."""
        with trio.move_on_after(timeout):
            async with open_confd_client(key, [self.address]) as client:
                while True:
                    result = await client.query(RequestType.CLUSTER_MASTER, timeout=0.5)
                    if result.serial == serial:
                        return
                    await trio.sleep(0.05)
        raise GanetiConfdError(
            f"ganeti-confd at {self.host}:{self.port} did not serve serial {serial} "
            f"within {timeout} s; log:\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and reap it."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(5):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


@asynccontextmanager
async def open_ganeti_confd(
    config: Mapping[str, Any],
    hmac_key: bytes,
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    binary: str | None = None,
    ready_timeout: float = 10.0,
) -> AsyncIterator[GanetiConfd]:
    """Start the real daemon under ``root`` serving ``config``; stop it on exit.

    Returns once it answers a PING signed with ``hmac_key``.
    """
    binary = binary or find_ganeti_confd()
    if binary is None:
        raise GanetiConfdError(
            "ganeti-confd was not found (install Debian's ganeti-haskell-3.0, "
            "or set TRIOCONFD_GANETI_CONFD)"
        )
    for directory in ("var/lib/ganeti", "var/run/ganeti", "var/log/ganeti"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    _write_atomically(root / "var/lib/ganeti/config.data", json.dumps(config).encode())
    _write_atomically(root / "var/lib/ganeti/hmac.key", hmac_key)
    port = free_udp_port(host) if port is None else port
    output = (root / "var/log/ganeti/stderr.log").open("wb")
    process = await trio.lowlevel.open_process(
        [binary, "-f", "--no-user-checks", "-b", host, "-p", str(port)],
        env={**os.environ, "GANETI_ROOTDIR": str(root)},
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    daemon = GanetiConfd(host, port, root, process)
    try:
        await _wait_until_ready(daemon, hmac_key, ready_timeout)
        yield daemon
    finally:
        with trio.CancelScope(shield=True):
            await daemon.stop()
        output.close()


async def _wait_until_ready(daemon: GanetiConfd, key: bytes, timeout: float) -> None:
    with trio.move_on_after(timeout):
        async with open_confd_client(key, [daemon.address]) as client:
            while daemon.process.returncode is None:
                result = await client.query(RequestType.PING, timeout=0.1)
                if not result.timed_out:
                    return
    state = (
        "is still silent"
        if daemon.process.returncode is None
        else f"exited with status {daemon.process.returncode}"
    )
    raise GanetiConfdError(
        f"ganeti-confd at {daemon.host}:{daemon.port} {state} after {timeout} s; "
        f"log:\n{daemon.log_tail()}"
    )
