"""README.rst's complete example runs as written and prints what it says."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from trioconfd.testing import free_udp_port

README = Path(__file__).resolve().parent.parent / "README.rst"


def _example_and_output() -> tuple[str, str]:
    text = README.read_text()
    section = text.split("A complete example\n", 1)[1]
    code = section.split(".. code-block:: python\n", 1)[1].split("\nIt prints::\n", 1)[0]
    output = section.split("\nIt prints::\n", 1)[1].split("\n\n\n", 1)[0]
    return _dedent(code), _dedent(output)


def _dedent(block: str) -> str:
    lines = [line[4:] if line.startswith("    ") else line for line in block.splitlines()]
    return "\n".join(lines).strip("\n") + "\n"


@pytest.mark.interop
def test_readme_example_runs_as_written(ganeti_confd_binary: str) -> None:
    code, expected = _example_and_output()
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    pattern = "".join(
        ".*?" if part == "..." else re.escape(part) for part in re.split(r"(\.\.\.)", expected)
    )
    assert re.fullmatch(pattern, completed.stdout), completed.stdout


async def test_readme_pytest_trio_example_passes() -> None:
    text = README.read_text()
    block = text.split("A pytest-trio test of code that asks confd::\n", 1)[1].split("\n\n\n")[0]
    namespace: dict[str, object] = {}
    exec(_dedent(block), namespace)
    test = namespace["test_finds_the_master"]
    assert callable(test)
    await test()


async def test_readme_cli_example_output_matches_the_cli() -> None:
    from trioconfd import ConfdReply, ReplyAggregator, ReplyStatus
    from trioconfd.cli._main import report
    from trioconfd.requests import node_role

    text = README.read_text()
    shown = text.split("$ trioconfd node-role node2", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    aggregator = ReplyAggregator(2)
    for port in (1, 2):
        aggregator.add(("192.0.2.1", port), ConfdReply(ReplyStatus.OK, 1, 12))
    out, err = io.StringIO(), io.StringIO()
    assert report(node_role("node2"), aggregator.result(), False, out, err) == 0
    assert [line.strip() for line in shown] == [out.getvalue().strip(), err.getvalue().strip()]


async def test_readme_serve_recipe_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    block = text.split("serve them, and ask::\n\n", 1)[1].split("\n\n", 1)[0]
    make_config, make_key, serve, ask = (line.strip() for line in block.splitlines())
    port = str(free_udp_port())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for line in (make_config, make_key):
        await trio.run_process(["bash", "-euc", line], cwd=tmp_path, env=env)
    assert (tmp_path / "hmac.key").stat().st_mode & 0o077 == 0
    assert serve.endswith(" &")
    serve_args = serve.removesuffix(" &").replace("18140", port).split()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio.run_process, serve_args, cwd=tmp_path, env=env, check=False)
        )
        try:
            with trio.fail_after(30):
                while True:  # until the server answers (it takes a moment to start)
                    done = await trio.run_process(
                        ["bash", "-euc", ask.replace("18140", port) + " --timeout 0.5"],
                        cwd=tmp_path,
                        env=env,
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                    )
                    if done.returncode != 3:
                        break
        finally:
            server.terminate()
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == "node1.example.com"


def test_the_docs_landing_page_quick_start_runs_as_written() -> None:
    page = (README.parent / "docs" / "index.rst").read_text()
    assert "pip install" in page  # a newcomer learns how to install it here
    code = page.split(".. code-block:: python\n", 1)[1].split("\nIt prints ``", 1)[0]
    expected = page.split("\nIt prints ``", 1)[1].split("``", 1)[0]
    assert len(_dedent(code).strip().splitlines()) <= 12  # a quick start, not a program
    completed = subprocess.run(
        [sys.executable, "-c", _dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == expected + "\n"
