"""Safe persistence: atomic writes and ``weights_only`` loads.

A crash or a full disk in the middle of a save must never leave a truncated file where a good
one (or none) was: we write to a temporary file in the destination folder, flush and fsync it,
then ``os.replace`` it over the target, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file, then atomically move it to ``path``.

    Args:
        path: Destination; its parent folder is created if missing.
        write: Writes the content to the open file object it is given.
        mode: ``"wb"`` or ``"w"``.

    Returns:
        The destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file + rename)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def safe_torch_load(path: str | os.PathLike) -> Any:
    """Load a file written by :func:`atomic_torch_save` with ``weights_only=True``.

    Only tensors and plain containers/scalars are accepted, so a tampered file cannot run code.
    """
    return torch.load(Path(path), map_location="cpu", weights_only=True)
