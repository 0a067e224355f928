"""Another commit's trioconfd beside this tree's: worktrees and child processes.

A benchmark that compares two commits runs each case in a child process
whose ``PYTHONPATH`` puts the trioconfd under test first; the other commit
is checked out in a temporary git worktree for the length of the run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def checked_out(revision: str) -> Iterator[Path]:
    """``revision`` in a temporary worktree, removed afterwards; yields its root."""
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp, "before")
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), revision],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            yield worktree
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False
            )


def run_child(script: Path, code: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --client SPEC`` with ``code``'s trioconfd; its last line of JSON."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, str(script), "--client", json.dumps(spec)],
        env=env,
        cwd=code,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def silent_sockets(count: int) -> tuple[list[socket.socket], list[tuple[str, int]]]:
    """Bound loopback UDP sockets that never read: peers that say nothing."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    return sockets, [sock.getsockname() for sock in sockets]
