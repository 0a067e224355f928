"""Sphinx configuration for trioconfd's documentation."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import trioconfd  # noqa: E402
from trioconfd.cli import build_parser  # noqa: E402

project = "trioconfd"
author = "The trioconfd developers"
copyright = "2026, the trioconfd developers"
version = release = trioconfd.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
intersphinx_mapping: dict[str, tuple[str, None]] = {}
exclude_patterns = ["_build"]
html_theme = "alabaster"


def _write_cli_reference() -> None:
    """The CLI reference, generated from the parser itself so it cannot drift."""
    parser = build_parser()
    parts = [parser.format_help()]
    subparsers = next(
        action for action in parser._actions if action.__class__.__name__ == "_SubParsersAction"
    )
    for name, sub in subparsers.choices.items():  # type: ignore[attr-defined]
        parts.append(f"\n\n$ trioconfd {name} --help\n\n{sub.format_help()}")
    generated = HERE / "_generated"
    generated.mkdir(exist_ok=True)
    (generated / "cli-help.txt").write_text("".join(parts))


_write_cli_reference()
