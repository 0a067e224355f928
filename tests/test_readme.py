"""README.rst's complete example runs as written and prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
