"""The pytest plugin: its fixtures, loaded through the installed entry point."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def _pytest(*args: str, cwd: Path) -> tuple[int, str]:
    done = await trio.run_process(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=str(cwd),
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def test_the_documented_example_passes_with_the_plugins_fixtures() -> None:
    code, output = await _pytest(str(EXAMPLES / "test_with_fixtures.py"), cwd=EXAMPLES.parent)
    assert code == 0, output
    assert "3 passed" in output


async def test_the_fixtures_come_from_the_entry_point() -> None:
    code, output = await _pytest(
        "-p", "no:trioconfd", str(EXAMPLES / "test_with_fixtures.py"), cwd=EXAMPLES.parent
    )
    assert code != 0
    assert "fixture 'confd_cluster' not found" in output


async def test_an_idle_plugin_is_harmless(tmp_path: Path) -> None:
    # No pytest-trio configuration, warnings as errors: the plugin must not
    # warn, add options or touch tests that do not ask for its fixtures.
    (tmp_path / "test_idle.py").write_text("def test_nothing():\n    assert True\n")
    code, output = await _pytest("-W", "error", "test_idle.py", cwd=tmp_path)
    assert code == 0, output
    assert "1 passed" in output
    code, output = await _pytest("--fixtures", "test_idle.py", cwd=tmp_path)
    assert code == 0, output
    for fixture in ("confd_cluster", "simulated_confd_cluster", "confd_key", "confd_config"):
        assert fixture in output


async def test_the_fixtures_without_trio_mode_say_what_to_set(tmp_path: Path) -> None:
    # No trio_mode: an unmarked async test and a sync one cannot run the
    # async fixtures. Each says so in one line, not with pytest's internals.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_no_trio_mode.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.trio\n"
        "async def test_marked(confd_cluster):\n"
        "    assert len(confd_cluster.peers) == 3\n\n"
        "async def test_unmarked(confd_cluster):\n"
        "    pass\n\n"
        "def test_sync(simulated_confd_cluster):\n"
        "    pass\n"
    )
    # -rN: no short summary, whose lines repeat the message on a wide terminal.
    code, output = await _pytest("-rN", "test_no_trio_mode.py", cwd=tmp_path)
    assert code != 0
    assert "1 passed, 2 errors" in output
    advice = "set trio_mode = true in your pytest configuration"
    sections = output.split("_ ERROR at setup of ")[1:]
    assert sorted(section.split(" _", 1)[0] for section in sections) == [
        "test_sync",
        "test_unmarked",
    ]
    assert all(section.count(advice) == 1 for section in sections), output
    assert "AssertionError" not in output
    assert "Traceback" not in output


async def test_strategies_without_hypothesis_say_what_to_install() -> None:
    for module in ("strategies", "properties"):
        done = await trio.run_process(
            [
                sys.executable,
                "-c",
                f"import sys; sys.modules['hypothesis'] = None; import trioconfd.testing.{module}",
            ],
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 1
        message = done.stderr.decode().strip().splitlines()[-1]
        assert message == (
            f"ImportError: trioconfd.testing.{module} needs Hypothesis: "
            "pip install 'trioconfd[test]'"
        )


async def test_a_cluster_serves_one_config_per_server_and_checks_its_arguments() -> None:
    import pytest

    from trioconfd import ConfdClientError, RequestType, query
    from trioconfd.testing import make_cluster_config, open_confd_cluster

    configs = [make_cluster_config(serial=serial) for serial in (5, 6)]
    async with open_confd_cluster(configs, "a key") as cluster:
        assert [server.serial for server in cluster.servers] == [5, 6]
        assert cluster.key == b"a key"
        assert repr(cluster) == (
            f"<ConfdCluster 127.0.0.1:{cluster.port}, 127.0.0.2:{cluster.port} serials=[5, 6]>"
        )
        result = await query(cluster.key, cluster.peers, RequestType.CLUSTER_MASTER, coverage=-1)
        assert result.serial == 6
        bad_lists: list[list[object]] = [[2], [True], ["0"]]
        for bad in bad_lists:
            with pytest.raises(ConfdClientError, match="server"):
                cluster.set_config(configs[0], servers=bad)  # type: ignore[arg-type]
        assert cluster.serial == 6  # nothing was changed by a refused call
    for size in (0, 255, True):
        with pytest.raises(ConfdClientError, match="size must be"):
            async with open_confd_cluster(configs[0], size=size):
                pass


async def test_a_bad_config_is_its_own_error_not_a_busy_port() -> None:
    import pytest

    from trioconfd import ConfdError
    from trioconfd.testing import open_confd_cluster

    with pytest.raises(ConfdError, match="not a Ganeti configuration") as refused:
        async with open_confd_cluster({"cluster": {}}):
            pass
    assert "no port was free" not in str(refused.value)
    # One that loads, but that no server can index (a node without a name).
    from trioconfd.testing import make_cluster_config

    nameless = make_cluster_config()
    del next(iter(nameless["nodes"].values()))["name"]
    with pytest.raises(ConfdError, match="the server can read") as refused:
        async with open_confd_cluster(nameless):
            pass
    assert "no port was free" not in str(refused.value)


async def test_a_server_port_out_of_range_is_a_clear_error() -> None:
    import pytest

    from trioconfd import ConfdArgumentError
    from trioconfd.testing import make_cluster_config, open_confd_server

    with pytest.raises(ConfdArgumentError, match="the server's port must be an integer"):
        async with open_confd_server(make_cluster_config(), b"k", port=70000):
            pass
