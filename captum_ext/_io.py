"""Safe persistence: atomic writes and ``weights_only`` loads.

A crash or a full disk in the middle of a save must never leave a truncated file where a good
one (or none) was: we write to a temporary file in the destination folder, flush and fsync it,
then ``os.replace`` it over the target, which is atomic on POSIX and Windows.

The written file gets the permission bits a plain ``open(path, "w")`` of a new file would give
(``0o666`` less the umask), not the ``0o600`` of :func:`tempfile.mkstemp`.

Temporary files are named ``.<name>.<host>-<pid>.<random>.tmp``: ``<host>`` is a short hash of
this machine's host name and ``<pid>`` the writer's process id. Clean-ups remove a temporary
file only when it is *stale*: its owner on this host is no longer running, or its name predates
this scheme. Temporary files of another host (a folder shared over the network) are left alone,
since the liveness of their owner cannot be checked from here; so are all files of other
processes on Windows, where ``os.kill(pid, 0)`` would terminate the process.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any, Callable

import torch

#: ``.<name>.<host>-<pid>.<random>.tmp``; ``<random>`` is :func:`tempfile.mkstemp`'s.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[a-z0-9_]+\.tmp$")

_UMASK_LOCK = threading.Lock()

#: Folders whose stale temporary files this process already removed (see :func:`atomic_write`).
_CLEANED: set[str] = set()


def host_tag() -> str:
    """Eight hex digits identifying this host in temporary file names."""
    return f"{zlib.crc32(socket.gethostname().encode('utf-8')):08x}"


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary files for a destination named ``name``."""
    return f".{name}.{host_tag()}-{os.getpid()}."


def temp_owner(name: str) -> tuple[str, int] | None:
    """``(host tag, pid)`` of a temporary file named by :func:`temp_prefix`, else ``None``."""
    match = _TEMP_RE.match(name)
    if match is None:
        return None
    return match["host"], int(match["pid"])


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still be running (``True`` when unsure).

    Only POSIX can tell: there ``os.kill(pid, 0)`` sends no signal, it only checks the pid. On
    Windows every pid counts as alive (``os.kill`` would terminate the process).
    """
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False  # never a writer's pid; os.kill(0, ...) would address a process group
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    except (OverflowError, ValueError):
        return False  # not a valid pid at all
    except OSError:
        return True
    return True


def is_stale_temp(name: str) -> bool:
    """Whether the temporary file ``name`` belongs to nobody alive (see the module docstring).

    A name not in the ``<host>-<pid>`` scheme is a legacy one and counts as stale; callers only
    pass names they know to be their own temporary files.
    """
    owner = temp_owner(name)
    if owner is None:
        return True
    host, pid = owner
    return host == host_tag() and not pid_alive(pid)


def remove_stale_temp_files(
    folder: str | os.PathLike[str], is_mine: Callable[[str], bool]
) -> list[Path]:
    """Delete the stale temporary files in ``folder`` whose names ``is_mine`` accepts.

    Files of live writers are kept, so a second run sharing the folder does not break the
    first one's saves. A file that another clean-up removed meanwhile is skipped.

    Args:
        folder: The folder to scan (not recursively).
        is_mine: Whether a file name is one of the caller's temporary files; only those are
            considered, so other files in the folder are never touched.

    Returns:
        The removed files.
    """
    removed = []
    for entry in os.scandir(folder):
        if is_mine(entry.name) and is_stale_temp(entry.name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def current_umask() -> int:
    """The process umask, read without changing it where possible.

    On Linux it is read from ``/proc/self/status``. Elsewhere it is read by setting it and
    restoring it at once, under a lock: that is safe against other calls of this function, but
    a file created by another thread in that instant would get the umask ``0o077``.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def default_file_mode() -> int:
    """The permission bits ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def _make_temp(dest: Path) -> tuple[int, str]:
    """Create this process's temporary file for ``dest``, with the default file mode."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=temp_prefix(dest.name), suffix=".tmp")
    if os.name == "posix":  # mkstemp makes it 0o600; Windows has no such permission bits
        try:
            os.fchmod(fd, default_file_mode())
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
    return fd, tmp


def _clean_once(folder: Path) -> None:
    """Remove stale temporary files of dead writers in ``folder``, once per process."""
    key = os.path.abspath(folder)
    if key in _CLEANED:
        return
    _CLEANED.add(key)
    with contextlib.suppress(OSError):  # best effort: never fail a save over a clean-up
        remove_stale_temp_files(folder, lambda name: temp_owner(name) is not None)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file, then atomically move it to ``path``.

    The file gets the mode of a new file made by ``open`` (``0o666`` less the umask). The first
    write into a folder also removes the temporary files that killed writers left there.

    Args:
        path: Destination; its parent folder is created if missing.
        write: Writes the content to the open file object it is given.
        mode: ``"wb"`` or ``"w"``.

    Returns:
        The destination path.

    Raises:
        FileNotFoundError: The temporary file was removed before the rename, by another process
            (an older version's clean-up, or a user): the message names the file.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(dest.parent)
    fd, tmp = _make_temp(dest)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, dest)
        except FileNotFoundError as err:
            if not dest.parent.is_dir() or os.path.exists(tmp):
                raise
            raise FileNotFoundError(
                err.errno,
                f"cannot save {dest}: its temporary file {tmp} was removed by another process "
                "before it was complete (is another run writing to the same folder?)",
            ) from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file + rename)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def safe_torch_load(path: str | os.PathLike) -> Any:
    """Load a file written by :func:`atomic_torch_save` with ``weights_only=True``.

    Only tensors and plain containers/scalars are accepted, so a tampered file cannot run code.
    """
    return torch.load(Path(path), map_location="cpu", weights_only=True)
