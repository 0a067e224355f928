"""The programs in examples/ run against in-process servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trioconfd.testing import ConfdServer, make_cluster_config, open_confd_server

from .conftest import write_key_file
from .test_cli import LineReader

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = b"example key\n"


def peers(*servers: ConfdServer) -> list[str]:
    return [f"--peer=127.0.0.1:{server.address[1]}" for server in servers]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_file(tmp_path, KEY)


async def test_watch_master_reacts_to_a_change(key_file: Path) -> None:
    config = make_cluster_config(nodes=3, serial=1)
    async with open_confd_server(config, KEY) as one, open_confd_server(config, KEY) as two:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                str(EXAMPLES / "watch_master.py"),
                *peers(one, two),
                "--key-file",
                str(key_file),
                "--interval",
                "0.05",
                "--changes",
                "1",
            ],
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        lines = LineReader(process.stdout)
        assert await lines.next() == "master is node1.example.com (serial 1)"
        newer = make_cluster_config(nodes=3, serial=2, master=2)
        one.set_config(newer)
        two.set_config(newer)
        assert await lines.next() == (
            "master changed: node1.example.com -> node2.example.com (serial 2)"
        )
        with trio.fail_after(10):
            assert await process.wait() == 0


async def test_node_for_instance_ip(key_file: Path) -> None:
    config = make_cluster_config(nodes=3, instances=3)
    async with open_confd_server(config, KEY) as one, open_confd_server(config, KEY) as two:
        script = [sys.executable, str(EXAMPLES / "node_for_instance_ip.py")]
        common = [*peers(one, two), "--key-file", str(key_file)]
        done = await trio.run_process([*script, "198.18.0.3", *common], capture_stdout=True)
        assert done.stdout.decode().strip() == "198.18.0.3 runs on node3.example.com (192.0.2.3)"
        done = await trio.run_process(
            [*script, "203.0.113.9", *common], capture_stderr=True, check=False
        )
        assert done.returncode == 1
        assert "not an instance IP here" in done.stderr.decode()


async def test_the_example_test_module_passes() -> None:
    done = await trio.run_process(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "test_app.py"),
        ],
        capture_stdout=True,
        check=False,
        cwd=str(EXAMPLES.parent),
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    output = done.stdout.decode()
    assert done.returncode == 0, output
    assert "2 passed" in output
