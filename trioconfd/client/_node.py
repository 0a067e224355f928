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

import trio
import trio.lowlevel

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


def _open_at_once(path: Path, what: str) -> int:
    # A FIFO opens without waiting for a writer (one with none then reads as
    # empty); what is read is then waited for (a pipe: ``<(cat key)``).
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfdClientError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _checked_size(data: bytes, path: Path, what: str) -> bytes:
    if len(data) > MOST_NODE_FILE_BYTES:
        raise ConfdClientError(
            f"the {what} {path} is over {MOST_NODE_FILE_BYTES:,} bytes: too long to be one"
        )
    return data


def _read(path: Path, what: str) -> bytes:
    """The file's bytes (at most one more than allowed), waiting for what a pipe gives."""
    fd = _open_at_once(path, what)
    try:
        try:
            os.set_blocking(fd, True)
            with open(fd, "rb", closefd=False) as file:
                data = file.read(MOST_NODE_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfdClientError(f"cannot read the {what} {path}: {exc.strerror}") from None
    return _checked_size(data, path, what)


#: Read at a time from a pipe (a key is far shorter).
_READ_AT_ONCE = 1 << 16


async def _read_in_trio(path: Path, what: str) -> bytes:
    """As :func:`_read`, but what a pipe or FIFO has not given yet is waited for in
    Trio (``wait_readable``): the event loop runs on, and a cancel scope ends the
    wait. A regular file is read at once, with no checkpoint."""
    fd = _open_at_once(path, what)
    data = bytearray()
    try:
        try:
            while len(data) <= MOST_NODE_FILE_BYTES:
                try:
                    chunk = os.read(fd, min(_READ_AT_ONCE, MOST_NODE_FILE_BYTES + 1 - len(data)))
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
                    continue
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfdClientError(f"cannot read the {what} {path}: {exc.strerror}") from None
    return _checked_size(bytes(data), path, what)


def _given_path(path: str | os.PathLike[str], what: str) -> Path:
    if not os.fspath(path):  # Path("") would be the current directory
        raise ConfdClientError(f"the {what}'s name is empty")
    return Path(path)


_KEY_FILE = "HMAC key file"
_CANDIDATES_FILE = "master candidates file"


def _key_path(path: str | os.PathLike[str] | None) -> Path:
    return _given_path(path, _KEY_FILE) if path is not None else ganeti_data_dir() / "hmac.key"


def _checked_key(key: bytes, key_path: Path) -> bytes:
    """The key read, refused if empty; a warning if others may read its file (said
    of the line that called the reader: ``stacklevel`` counts this and the reader)."""
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
            stacklevel=3,
        )
    return key


def read_hmac_key(path: str | os.PathLike[str] | None = None) -> bytes:
    """The exact bytes of the key file (default: the node's ``hmac.key``).

    A missing, unreadable or empty file is a :class:`ConfdClientError`; one
    that others than its owner may read draws an :class:`InsecureKeyFileWarning`.
    The key itself never appears in an error or a warning.
    """
    key_path = _key_path(path)
    return _checked_key(_read(key_path, _KEY_FILE), key_path)


async def node_hmac_key() -> bytes:
    """:func:`read_hmac_key` of the node's own key file, for a Trio task (see
    :func:`_read_in_trio`)."""
    key_path = _key_path(None)
    return _checked_key(await _read_in_trio(key_path, _KEY_FILE), key_path)


def _candidates_path(path: str | os.PathLike[str] | None) -> Path:
    if path is not None:
        return _given_path(path, _CANDIDATES_FILE)
    return ganeti_data_dir() / "ssconf_master_candidates_ips"


def _listed_ips(data: bytes, ips_path: Path) -> list[str]:
    text = data.decode("utf-8", "replace")
    ips = [line.strip() for line in text.splitlines() if line.strip()]
    if not ips:
        raise ConfdClientError(f"the master candidates file {ips_path} lists no addresses")
    return ips


def read_master_candidate_ips(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The IPs listed one per line in the node's ``ssconf_master_candidates_ips``."""
    ips_path = _candidates_path(path)
    return _listed_ips(_read(ips_path, _CANDIDATES_FILE), ips_path)


async def node_master_candidate_ips() -> list[str]:
    """:func:`read_master_candidate_ips` of the node's own file, for a Trio task."""
    ips_path = _candidates_path(None)
    return _listed_ips(await _read_in_trio(ips_path, _CANDIDATES_FILE), ips_path)
