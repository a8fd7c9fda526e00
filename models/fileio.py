"""Crash-safe small-file I/O and one-line, user-facing errors for the training and experiment CLIs.

* :func:`write_text_atomic` / :func:`write_json_atomic`: write to a temporary file in the
  target's folder, ``fsync`` it, ``os.replace`` it over the target and ``fsync`` the folder.
  A kill at any point leaves either the old file or the new one, never a truncated mix.
* :func:`read_json`: parses a JSON file; a missing, unreadable or malformed file raises an
  error whose one-line message names the file, what it is and what to do.
* :func:`ensure_writable_dir`: creates a folder and proves it writable *before* expensive
  work starts (a path under a file, a read-only or uncreatable folder is one clear error).

Errors meant for the user derive from :class:`UserFacingError` (a ``ValueError``); a CLI
prints ``f"error: {e}"`` on one line and exits with status 2.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "UserFacingError",
    "CorruptFileError",
    "write_text_atomic",
    "write_json_atomic",
    "read_json",
    "ensure_writable_dir",
]


class UserFacingError(ValueError):
    """An error whose message is one line naming the path involved and what to do about it."""


class CorruptFileError(UserFacingError):
    """A file exists but its content is damaged (truncated, malformed, checksum mismatch)."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically and durably; returns the path.

    Raises:
        UserFacingError: The folder does not exist or cannot be written (names the path).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserFacingError(
            f"cannot write {path}: {e.strerror or e}; check that its folder exists and is writable"
        ) from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise UserFacingError(
                f"cannot write {path}: {e.strerror or e}; check free space and permissions"
            ) from e
        raise
    _fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """Writes ``obj`` as JSON to ``path`` atomically and durably (see :func:`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def read_json(path: str | os.PathLike, *, what: str, fix: str | None = None) -> Any:
    """Parses the JSON file ``path``.

    Args:
        path: The file.
        what: What the file is, for the message (e.g. ``"run config"``, ``"summary"``).
        fix: What the user should do if it is damaged (default: restore or delete it).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it and ``what``).
        CorruptFileError: ``path`` is not valid UTF-8 JSON, or cannot be read; the message
            names the file, the position of the error and ``fix``.
    """
    path = Path(path)
    fix = fix or "restore it from a backup, or delete it to have it rebuilt"
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} {path} does not exist") from e
    except IsADirectoryError as e:
        raise CorruptFileError(f"{what} {path} is a folder, not a file; {fix}") from e
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{what} {path} is damaged (not UTF-8 text at byte {e.start}); {fix}") from e
    except OSError as e:
        raise CorruptFileError(f"cannot read {what} {path}: {e.strerror or e}; {fix}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptFileError(
            f"{what} {path} is damaged (invalid JSON at line {e.lineno} column {e.colno}: {e.msg}); {fix}"
        ) from e


def ensure_writable_dir(path: str | os.PathLike, *, what: str) -> Path:
    """Creates the folder ``path`` (with parents) if needed and checks that files can be written in it.

    Call it before any expensive work whose results go to ``path``.

    Args:
        path: The folder.
        what: What the folder is for, for the message (e.g. ``"--out folder"``).

    Returns:
        ``Path(path)``.

    Raises:
        UserFacingError: ``path`` or one of its parents is a file, the folder cannot be
            created, or a probe file cannot be written in it (read-only, no space, ...).
    """
    path = Path(path)
    # A file on the way (path itself or a parent) gives NotADirectoryError / FileExistsError deep
    # inside mkdir; name it instead.
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == path else f"is under the file {p}"
                raise UserFacingError(f"{what} {path} {where}; choose a folder path")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserFacingError(
            f"cannot create {what} {path}: {e.strerror or e}; choose a location you can write to"
        ) from e
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
    except OSError as e:
        raise UserFacingError(
            f"{what} {path} is not writable ({e.strerror or e}); fix its permissions or choose another folder"
        ) from e
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    except OSError as e:
        raise UserFacingError(
            f"{what} {path} is not writable ({e.strerror or e}); free some space or choose another folder"
        ) from e
    finally:
        os.close(fd)
        try:
            os.unlink(probe)
        except OSError:
            pass
    return path
