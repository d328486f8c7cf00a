"""File modes of atomic writes, and clean-ups that spare live writers' temporary files.

Issue 15, items 7, 8 and 12: files were always 0o600 whatever the umask; a second run on a
results folder deleted the first run's in-flight temporary files; temporary files of killed
saves were never cleaned.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from captum.attr import Saliency
from dataset_workers import build
from torch.utils.data import TensorDataset

from captum_ext import _io
from captum_ext._io import (
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    current_umask,
    default_file_mode,
    host_tag,
    is_stale_temp,
    pid_alive,
    remove_stale_temp_files,
    temp_owner,
    temp_prefix,
)
from captum_ext.dataset_attribution import attribute_dataset

pytestmark = pytest.mark.skipif(
    os.name != "posix", reason="file modes, umask and os.kill(pid, 0) are POSIX-only"
)

N, CHUNK, BATCH = 40, 16, 8
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def umask():
    """Set the process umask for one test; the old one is restored afterwards."""
    old = os.umask(0o022)

    def set_umask(value: int) -> None:
        os.umask(value)

    try:
        yield set_umask
    finally:
        os.umask(old)


@pytest.fixture
def data():
    model, x, y = build(N)
    return Saliency(model), TensorDataset(x, y)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_for(folder: Path, dest_name: str, pid: int, host: str | None = None) -> Path:
    path = folder / f".{dest_name}.{host or host_tag()}-{pid}.ab12cd_9.tmp"
    path.write_bytes(b"partial")
    return path


def run_second(out: Path) -> subprocess.CompletedProcess:
    """A second ``attribute_dataset`` run on ``out``, in another process."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from captum.attr import Saliency
        from dataset_workers import build
        from torch.utils.data import TensorDataset
        from captum_ext.dataset_attribution import attribute_dataset
        model, x, y = build({N})
        attribute_dataset(Saliency(model), TensorDataset(x, y), sys.argv[1],
                          chunk_size={CHUNK}, batch_size={BATCH})
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120
    )


# ------------------------------------------------------------------------------ file modes


@pytest.mark.parametrize(
    "value, expected",
    [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
    ids=["umask022", "umask077", "umask002"],
)
def test_atomic_writers_give_the_mode_of_open(umask, tmp_path, value, expected):
    umask(value)
    assert current_umask() == value
    assert default_file_mode() == expected
    text = atomic_write_text("hello", tmp_path / "a.txt")
    tensor = atomic_torch_save({"x": torch.ones(2)}, tmp_path / "b.pt")
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:
        f.write("hello")
    assert mode(text) == mode(tensor) == mode(plain) == expected
    assert text.read_text() == "hello"
    assert torch.equal(_io.safe_torch_load(tensor)["x"], torch.ones(2))


def test_overwriting_a_0600_file_gives_the_umask_mode(umask, tmp_path):
    umask(0o022)
    path = tmp_path / "results.json"
    path.write_text("old")
    path.chmod(0o600)  # as written by the old version
    atomic_write_text("new", path)
    assert mode(path) == 0o644
    assert path.read_text() == "new"


def test_umask_fallback_without_proc_restores_the_umask(umask, monkeypatch):
    umask(0o027)

    def no_proc(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr(_io, "open", no_proc, raising=False)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # the fallback put the umask back


def test_attribute_dataset_files_follow_the_umask(umask, data, tmp_path):
    method, ds = data
    for value, expected in [(0o022, 0o644), (0o077, 0o600)]:
        umask(value)
        out = tmp_path / f"out{value:o}"
        attribute_dataset(method, ds, out, chunk_size=CHUNK, batch_size=BATCH)
        files = sorted(out.iterdir())
        names = [p.name for p in files]
        assert names == [
            "chunk-000000.pt",
            "chunk-000001.pt",
            "chunk-000002.pt",
            "index.json",
            "manifest.json",
        ]
        assert {p.name: mode(p) for p in files} == {name: expected for name in names}


# --------------------------------------------------------------------- temp names and owners


def test_temp_files_are_named_for_their_owner(tmp_path):
    seen = []
    atomic_write_text("x", tmp_path / "index.json")  # the folder clean-up has run
    atomic_write(tmp_path / "index.json", lambda f: seen.extend(os.listdir(tmp_path)))
    (name,) = [n for n in seen if n.endswith(".tmp")]
    assert name.startswith(temp_prefix("index.json"))
    assert name.startswith(f".index.json.{host_tag()}-{os.getpid()}.")
    assert temp_owner(name) == (host_tag(), os.getpid())
    assert not list(tmp_path.glob(".*.tmp"))


def test_liveness_of_owners():
    assert pid_alive(os.getpid())
    assert pid_alive(os.getppid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(0)
    assert not pid_alive(-1)
    assert not pid_alive(2**80)


def test_stale_rule():
    assert not is_stale_temp(f".a.pt.{host_tag()}-{os.getpid()}.xyz.tmp")
    assert is_stale_temp(f".a.pt.{host_tag()}-{dead_pid()}.xyz.tmp")
    assert is_stale_temp(".a.pt.k3j4h5_x.tmp")  # legacy name: no owner
    other_host = "0" * 8 if host_tag() != "0" * 8 else "1" * 8
    assert not is_stale_temp(f".a.pt.{other_host}-{dead_pid()}.xyz.tmp")  # cannot check


def test_clean_up_removes_dead_and_legacy_and_keeps_live_and_foreign(tmp_path):
    live = temp_for(tmp_path, "chunk-000001.pt", os.getpid())
    parent = temp_for(tmp_path, "chunk-000001.pt", os.getppid())
    dead = temp_for(tmp_path, "chunk-000001.pt", dead_pid())
    legacy = tmp_path / ".chunk-000001.pt.k3j4h5.tmp"
    legacy.write_bytes(b"old")
    other_host = "0" * 8 if host_tag() != "0" * 8 else "1" * 8
    foreign_host = temp_for(tmp_path, "chunk-000001.pt", dead_pid(), host=other_host)
    not_mine = tmp_path / ".notes.tmp"
    not_mine.write_bytes(b"user file")
    removed = remove_stale_temp_files(tmp_path, lambda n: n.startswith(".chunk-"))
    assert sorted(removed) == sorted([dead, legacy])
    assert not dead.exists() and not legacy.exists()
    assert live.exists() and parent.exists() and foreign_host.exists() and not_mine.exists()


def test_atomic_write_removes_dead_writers_temp_files_next_to_it(tmp_path):
    dead = temp_for(tmp_path, "results.json", dead_pid())
    dead_other = temp_for(tmp_path, "timings.png", dead_pid())
    live = temp_for(tmp_path, "results.json", os.getppid())
    legacy = tmp_path / ".results.json.k3j4h5_x.tmp"  # could be anyone's: left alone here
    legacy.write_bytes(b"old")
    atomic_write_text("{}", tmp_path / "results.json")
    assert not dead.exists() and not dead_other.exists()
    assert live.exists() and legacy.exists()
    assert (tmp_path / "results.json").read_text() == "{}"


def test_a_removed_temp_file_gives_a_clear_error(tmp_path):
    dest = tmp_path / "index.json"
    atomic_write_text("old", dest)

    def write_then_lose_it(f):
        f.write(b"new")
        for p in tmp_path.glob(".index.json.*.tmp"):
            p.unlink()

    with pytest.raises(FileNotFoundError, match=r"removed by another process.*same folder"):
        atomic_write(dest, write_then_lose_it)
    assert dest.read_text() == "old"


# ----------------------------------------------------------------- attribute_dataset clean-up


def test_attribute_dataset_keeps_live_temp_files_and_removes_dead_ones(data, tmp_path):
    method, ds = data
    out = tmp_path / "out"
    attribute_dataset(method, ds, out, chunk_size=CHUNK, batch_size=BATCH)
    (out / "index.json").unlink()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        names = ["manifest.json", "index.json", "chunk-000001.pt"]
        live = [temp_for(out, n, sleeper.pid) for n in names]
        mine = [temp_for(out, n, os.getpid()) for n in names]
        dead = [temp_for(out, n, dead_pid()) for n in names]
        legacy = [out / f".{n}.k3j4h5.tmp" for n in names]
        for p in legacy:
            p.write_bytes(b"old")
        attribute_dataset(method, ds, out, chunk_size=CHUNK, batch_size=BATCH)
        assert all(p.exists() for p in live + mine)
        assert not any(p.exists() for p in dead + legacy)
    finally:
        sleeper.kill()
        sleeper.wait()
    attribute_dataset(method, ds, out, chunk_size=CHUNK, batch_size=BATCH)
    assert not any(p.exists() for p in live)  # its owner is dead now
    assert all(p.exists() for p in mine)


def test_a_second_run_does_not_break_the_first_runs_saves(data, tmp_path):
    """Run 2 (another process) starts while run 1 is saving a chunk and the index."""
    method, ds = data
    out = tmp_path / "out"
    attribute_dataset(method, ds, out, chunk_size=CHUNK, batch_size=BATCH)
    for name in ("index.json", "chunk-000000.pt"):
        (out / name).unlink()
    runs = []

    def save_chunk(f):
        f.write(b"first run's chunk")
        in_flight = sorted(out.glob(".*.tmp"))
        assert [temp_owner(p.name) for p in in_flight] == [(host_tag(), os.getpid())] * 2
        runs.append(run_second(out))
        assert all(p.exists() for p in in_flight)

    atomic_write(out / "index.json", lambda f: atomic_write(out / "chunk-000000.pt", save_chunk))
    (second,) = runs
    assert second.returncode == 0, second.stderr
    assert (out / "chunk-000000.pt").read_bytes() == b"first run's chunk"
    assert not list(out.glob(".*.tmp"))
