"""README.rst's complete example runs as written and prints what it says."""

from __future__ import annotations

import ast
import inspect
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
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


# -- the signatures README writes ------------------------------------------------

_SIGNATURE_LINE = re.compile(
    r"^``(?:await |async for \w+ in )?(?P<owner>client\.|trioconfd\.)?(?P<name>[a-z_]+)"
    r"\((?P<params>[^`]*)\)(?: -> [\w\[\], ]+)?``$",
    re.MULTILINE,
)


def _written_signatures() -> list[tuple[str, str, Callable[..., object]]]:
    """Each ``name(params)`` README writes alone on a line, for a public callable:
    a function of trioconfd or trioconfd.testing, or a ``client.`` method."""
    import trioconfd
    import trioconfd.testing

    found = []
    for match in _SIGNATURE_LINE.finditer(README.read_text()):
        name, owner = match["name"], match["owner"]
        if owner == "client.":
            function = getattr(trioconfd.ConfdClient, name)
        else:
            function = getattr(trioconfd, name, None) or getattr(trioconfd.testing, name, None)
            if function is None:
                continue
        found.append((f"{owner or ''}{name}", match["params"], function))
    return found


def _default_matches(written: ast.expr, actual: object) -> bool:
    if isinstance(written, ast.Call) and any(
        isinstance(arg, ast.Constant) and arg.value is Ellipsis for arg in written.args
    ):
        # Faults(...): an instance of that class, its fields not written out.
        return type(actual).__name__ == ast.unparse(written.func)
    if isinstance(written, ast.Name):
        return getattr(actual, "__name__", None) == written.id
    try:
        value = ast.literal_eval(written)
    except ValueError:
        return False
    return bool(value == actual) and type(value) is type(actual)


def test_readme_writes_the_signatures_the_code_has() -> None:
    signatures = _written_signatures()
    names = {name for name, _, _ in signatures}
    assert {"open_confd_client", "client.query", "trioconfd.query", "make_cluster_config"} <= names
    for name, params, function in signatures:
        actual = dict(inspect.signature(function).parameters)
        actual.pop("self", None)
        complete = not params.rstrip().endswith("...")
        written = params.rstrip().removesuffix("...").rstrip().rstrip(",")
        tree = ast.parse(f"def f({written}): pass").body[0]
        assert isinstance(tree, ast.FunctionDef)
        arguments = tree.args
        positional = [*arguments.posonlyargs, *arguments.args]
        kinds = [(argument, False) for argument in positional]
        kinds += [(argument, True) for argument in arguments.kwonlyargs]
        defaults: dict[str, ast.expr] = dict(
            zip([a.arg for a in positional][len(positional) - len(arguments.defaults) :],
                arguments.defaults, strict=True)
        )  # fmt: skip
        defaults.update(
            (a.arg, d)
            for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
            if d is not None
        )
        for argument, keyword_only in kinds:
            where = f"README's {name}({params}): {argument.arg}"
            assert argument.arg in actual, f"{where} is not a parameter"
            parameter = actual[argument.arg]
            assert (parameter.kind is inspect.Parameter.KEYWORD_ONLY) is keyword_only, where
            if argument.arg in defaults:
                assert _default_matches(defaults[argument.arg], parameter.default), (
                    f"{where}: the default is {parameter.default!r}"
                )
            else:
                assert parameter.default is inspect.Parameter.empty, f"{where} has a default"
        # In the code's order: a positional argument swapped would be a bug.
        order = [argument.arg for argument, _ in kinds]
        assert order == [parameter for parameter in actual if parameter in order], (
            f"README's {name}({params}) writes its parameters in another order"
        )
        if complete:
            missing = set(actual) - set(order)
            assert not missing, f"README's {name}(...) leaves out {sorted(missing)}"
