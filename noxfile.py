"""Development sessions: ``nox -s tests`` runs the whole suite."""

from __future__ import annotations

import email
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

# The linters, pinned here (not in the package's metadata) so that a new
# release's rules cannot break CI unannounced.
LINTERS = ("ruff==0.17.6", "mypy==2.4.1")

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, interop tests against the real ganeti-confd included."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The parser and aggregation properties at 100,000 examples each (long)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "fuzz", *session.posargs, env={"HYPOTHESIS_PROFILE": "fuzz"})


@nox.session
def mutate(session: nox.Session) -> None:
    """Mutation testing of the sans-IO core and the property harness (mutmut; long)."""
    session.install("-e", ".[test]", "mutmut>=3.8")
    shutil.rmtree("mutants", ignore_errors=True)
    session.run("mutmut", "run", *session.posargs)
    session.run("mutmut", "results")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*LINTERS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    session.install("-e", ".[test]", *LINTERS, "nox")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the real ganeti-confd (ratios within one run)."""
    session.install("-e", ".")
    session.run("python", "-m", "benchmarks.harness", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and wheel; check their contents and metadata; run them fresh.

    The wheel is installed in a new venv and run; the sdist is unpacked, set
    up with README.rst's own commands (a venv, pip install ., the demo), and
    its tests are collected and a quick part of them run.
    """
    session.install("build")
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", "dist")
    (wheel,) = Path("dist").glob("trioconfd-*.whl")
    (sdist,) = Path("dist").glob("trioconfd-*.tar.gz")
    session.log(f"built {wheel.name} and {sdist.name}")
    _check_contents(wheel, sdist)
    with tempfile.TemporaryDirectory() as fresh:
        bin_dir = Path(fresh, "bin")
        session.run("python", "-m", "venv", fresh)
        session.run(
            str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel), external=True
        )
        session.run(str(bin_dir / "trioconfd"), "--help", external=True, silent=True)
        session.run(str(bin_dir / "trioconfd"), "demo", external=True)
        session.run(
            str(bin_dir / "python"),
            "-c",
            "import trioconfd, pathlib; "
            "assert (pathlib.Path(trioconfd.__file__).parent / 'py.typed').exists()",
            external=True,
        )
    with tempfile.TemporaryDirectory() as unpacked:
        with tarfile.open(sdist) as archive:
            archive.extractall(unpacked, filter="data")
        source = Path(unpacked, sdist.name.removesuffix(".tar.gz"))
        setup = _readme_block(Path("README.rst").read_text(), "Run the demo")
        session.log(f"README's set-up, in the unpacked sdist:\n{setup}")
        session.run("bash", "-euc", f"cd {source} && {setup}", external=True)
        python = str(source / ".venv" / "bin" / "python")
        session.run(python, "-m", "pip", "install", "-q", f"{source}[test]", external=True)
        pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(source)]
        session.run(*pytest, "--collect-only", str(source / "tests"), external=True, silent=True)
        quick = ["test_wire.py", "test_requests.py", "test_newcomer.py", "test_cli.py"]
        session.run(*pytest, *(str(source / "tests" / name) for name in quick), external=True)


def _readme_block(text: str, after: str) -> str:
    """The commands of the literal block that follows ``after`` in README.rst, one line."""
    block = text.split(after, 1)[1].split("::\n\n", 1)[1].split("\n\n", 1)[0]
    return " && ".join(line.strip() for line in block.splitlines() if line.strip())


def _check_contents(wheel: Path, sdist: Path) -> None:
    """The license, the typing marker, the tests and the metadata a package index shows."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = (name for name in names if name.endswith(".dist-info/METADATA"))
        fields = email.message_from_bytes(archive.read(metadata))
    wanted = ["licenses/LICENSE", "trioconfd/py.typed"]
    missing = [item for item in wanted if not any(name.endswith(item) for name in names)]
    with tarfile.open(sdist) as archive:
        inside = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for path in ("LICENSE", "tests/__init__.py", "tests/conftest.py", "tests/responders.py"):
        if path not in inside:
            missing.append(f"{path} in the sdist")
    classifiers = fields.get_all("Classifier") or []
    if not any(c.startswith("Development Status ::") for c in classifiers):
        missing.append("a Development Status classifier")
    if not any(c.startswith("Programming Language :: Python :: 3.1") for c in classifiers):
        missing.append("Python version classifiers")
    if not fields.get_all("Project-URL"):
        missing.append("[project.urls]")
    if fields.get("License-Expression") != "MIT":
        missing.append("License-Expression: MIT")
    # No link to the docs' source folder as if it were built docs, and no
    # development pins in the extras users see.
    urls = fields.get_all("Project-URL") or []
    extras = fields.get_all("Provides-Extra") or []
    unwanted = [url for url in urls if "/tree/main/docs" in url]
    unwanted += [f"the extra {extra!r}" for extra in extras if extra != "test"]
    if unwanted:
        raise RuntimeError(f"the distributions should not have: {', '.join(unwanted)}")
    if missing:
        raise RuntimeError(f"the distributions lack: {', '.join(missing)}")


@nox.session
def docs(session: nox.Session) -> None:
    """The Sphinx documentation, warnings as errors, into docs/_build/html."""
    session.install("-e", ".[test]", "sphinx>=7")  # the Hypothesis helpers are documented too
    session.run(
        "sphinx-build", "-E", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )
