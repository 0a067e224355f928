"""Defaults read from the Ganeti node the client runs on, as Ganeti's ``GetConfdClient`` does.

A node keeps the cluster's confd key in ``hmac.key`` and the master
candidates' primary IPs in ``ssconf_master_candidates_ips``, both in
``$GANETI_ROOTDIR/var/lib/ganeti``.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from ..protocol import ConfdClientError


class InsecureKeyFileWarning(UserWarning):
    """The HMAC key file can be read by users other than its owner."""


def ganeti_data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/var/lib/ganeti``; ``root`` defaults to ``$GANETI_ROOTDIR`` (usually unset)."""
    if root is None:
        root = os.environ.get("GANETI_ROOTDIR", "")
    return Path(f"{os.fspath(root).rstrip('/')}/var/lib/ganeti")


#: A node file longer than this is not what it should be (a key, a list of IPs).
MOST_NODE_FILE_BYTES = 1 << 20


def _opened_at_once(path: str, flags: int) -> int:
    # A FIFO opens without waiting for a writer (one with none then reads as
    # empty); what is read is then waited for (a pipe: ``<(cat key)``).
    fd = os.open(path, flags | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return fd


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb", opener=_opened_at_once) as file:
            data = file.read(MOST_NODE_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfdClientError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if len(data) > MOST_NODE_FILE_BYTES:
        raise ConfdClientError(
            f"the {what} {path} is over {MOST_NODE_FILE_BYTES:,} bytes: too long to be one"
        )
    return data


def _given_path(path: str | os.PathLike[str], what: str) -> Path:
    if not os.fspath(path):  # Path("") would be the current directory
        raise ConfdClientError(f"the {what}'s name is empty")
    return Path(path)


def read_hmac_key(path: str | os.PathLike[str] | None = None) -> bytes:
    """The exact bytes of the key file (default: the node's ``hmac.key``).

    A missing, unreadable or empty file is a :class:`ConfdClientError`; one
    that others than its owner may read draws an :class:`InsecureKeyFileWarning`.
    The key itself never appears in an error or a warning.
    """
    key_path = (
        _given_path(path, "HMAC key file") if path is not None else ganeti_data_dir() / "hmac.key"
    )
    key = _read(key_path, "HMAC key file")
    if not key:
        raise ConfdClientError(f"the HMAC key file {key_path} is empty")
    try:
        mode = key_path.stat().st_mode
    except OSError:
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(
            f"the HMAC key file {key_path} is accessible to other users "
            f"(mode {stat.S_IMODE(mode):03o}); chmod 600 it",
            InsecureKeyFileWarning,
            stacklevel=2,
        )
    return key


def read_master_candidate_ips(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The IPs listed one per line in the node's ``ssconf_master_candidates_ips``."""
    ips_path = (
        _given_path(path, "master candidates file")
        if path is not None
        else ganeti_data_dir() / "ssconf_master_candidates_ips"
    )
    text = _read(ips_path, "master candidates file").decode("utf-8", "replace")
    ips = [line.strip() for line in text.splitlines() if line.strip()]
    if not ips:
        raise ConfdClientError(f"the master candidates file {ips_path} lists no addresses")
    return ips
