"""Development sessions: ``nox -s tests`` runs the whole suite."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nox

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
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    session.install("-e", ".[lint]")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the real ganeti-confd (ratios within one run)."""
    session.install("-e", ".")
    session.run("python", "-m", "benchmarks.harness", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and wheel, install the wheel in a fresh venv, and run it there."""
    session.install("build")
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", "dist")
    (wheel,) = Path("dist").glob("trioconfd-*.whl")
    (sdist,) = Path("dist").glob("trioconfd-*.tar.gz")
    session.log(f"built {wheel.name} and {sdist.name}")
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


@nox.session
def docs(session: nox.Session) -> None:
    """The Sphinx documentation, warnings as errors, into docs/_build/html."""
    session.install("-e", ".[test]", "sphinx>=7")  # the Hypothesis helpers are documented too
    session.run(
        "sphinx-build", "-E", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )
