"""Result folders of :func:`~captum_ext.dataset_attribution.attribute_dataset`: format and reader.

A results folder holds ``manifest.json`` (the settings of the run, written before any work),
one ``chunk-NNNNNN.pt`` per chunk of ``chunk_size`` consecutive example ids (written atomically
by the rank that owns the chunk) and ``index.json``, written last, once every chunk is there.
Chunk files are plain tensors and containers, loadable with ``torch.load(weights_only=True)``.
Each carries the fingerprint of the manifest it was computed under, so a chunk from other
settings is never mistaken for a finished one.

``index.json`` lists every chunk with its ids ``[start, stop)``, its file name and the
``sha256`` of the file's bytes. The reader trusts none of it blindly: the entries must be exactly
chunks ``0 .. ceil(n / chunk_size) - 1`` in order, with the bounds of :func:`chunk_bounds` (so
the ids ``0 .. n - 1`` are covered once) and the names of :func:`chunk_name` (so no path leads
out of the folder), and each chunk file must match its checksum when it is first read. Resuming
a finished run keeps its index until the new one replaces it (atomically, at the end); a chunk
file rewritten meanwhile no longer matches the old index's checksum and is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from captum_ext._io import safe_torch_load

FORMAT = "captum_ext.attribute_dataset"
VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.json"

TensorOrTuple = Union[Tensor, tuple[Tensor, ...]]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

#: The keys of ``index.json`` and their types (an ``int`` is never a ``bool``).
INDEX_TYPES: dict[str, Any] = {
    "n": int,
    "chunk_size": int,
    "fingerprint": str,
    "method": str,
    "is_tuple": bool,
    "shapes": list,
    "dtypes": list,
    "has_targets": bool,
    "has_deltas": bool,
    "world_size": int,
    "elapsed_s": (int, float),
    "chunks": list,
}
#: The keys of each chunk entry of ``index.json``.
CHUNK_KEYS = ("chunk", "file", "start", "stop", "sha256")


def chunk_name(chunk: int) -> str:
    """File name of chunk ``chunk`` (named by chunk, not by rank, so world sizes can change)."""
    return f"chunk-{chunk:06d}.pt"


def chunk_bounds(chunk: int, n: int, chunk_size: int) -> tuple[int, int]:
    """Ids ``[start, stop)`` covered by chunk ``chunk`` of a dataset of ``n`` examples."""
    return chunk * chunk_size, min((chunk + 1) * chunk_size, n)


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """``sha256`` of a file's bytes, read in blocks of ``block`` bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(block), b""):
            h.update(data)
    return h.hexdigest()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def index_problem(index: dict) -> str | None:
    """Why a loaded ``index.json`` (format and version checked) is not valid (``None``: it is).

    Checks that every key of :data:`INDEX_TYPES` is there with its type, that ``n`` and
    ``chunk_size`` are positive, and that ``chunks`` holds exactly the entries of chunks
    ``0 .. ceil(n / chunk_size) - 1`` in order (see :func:`chunk_entry_problem`).
    """
    for key, kind in INDEX_TYPES.items():
        if key not in index:
            return f"missing key {key!r}"
        value = index[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key!r} has the wrong type ({type(value).__name__})"
    n, size, chunks = index["n"], index["chunk_size"], index["chunks"]
    if n < 1 or size < 1:
        return f"'n' and 'chunk_size' must be >= 1, got n={n}, chunk_size={size}"
    expected = -(-n // size)
    if len(chunks) != expected:
        return (
            f"it lists {len(chunks)} chunks, but n={n} ids in chunks of {size} make {expected} "
            f"(chunks 0..{expected - 1}, each id once)"
        )
    for c, entry in enumerate(chunks):
        problem = chunk_entry_problem(entry, c, n, size)
        if problem is not None:
            return f"chunk entry {c}: {problem}"
    return None


def chunk_entry_problem(entry: Any, chunk: int, n: int, chunk_size: int) -> str | None:
    """Why ``entry`` is not the index entry of chunk ``chunk`` (``None``: it is).

    The entry must hold :data:`CHUNK_KEYS`: ``chunk`` equal to its position, ``start`` and
    ``stop`` equal to :func:`chunk_bounds`, ``file`` equal to :func:`chunk_name` (a bare name
    in the folder: no ``../``, no absolute path) and ``sha256`` 64 lowercase hex digits.
    """
    if not isinstance(entry, dict):
        return f"not a dict ({type(entry).__name__})"
    for key in CHUNK_KEYS:
        if key not in entry:
            if key == "sha256":
                return (
                    "no 'sha256' checksum (an index written before checksums were stored): "
                    "call attribute_dataset again with the same arguments to rewrite the index"
                )
            return f"missing key {key!r}"
    if not _is_int(entry["chunk"]) or entry["chunk"] != chunk:
        return f"is chunk {entry['chunk']!r}, expected {chunk} (chunks must be listed in order)"
    start, stop = chunk_bounds(chunk, n, chunk_size)
    got = (entry["start"], entry["stop"])
    if not all(_is_int(v) for v in got) or got != (start, stop):
        return f"covers ids [{got[0]!r}, {got[1]!r}), chunk {chunk} of n={n} is [{start}, {stop})"
    if entry["file"] != chunk_name(chunk):
        return (
            f"file {entry['file']!r} is not {chunk_name(chunk)!r} (chunk files are named by "
            "chunk, inside the results folder)"
        )
    if not isinstance(entry["sha256"], str) or not _SHA256.match(entry["sha256"]):
        return f"'sha256' is not 64 lowercase hex digits: {entry['sha256']!r}"
    return None


def tensor_digest(t: Tensor) -> str:
    """``sha256`` of a tensor's dtype, shape and bytes (on CPU), as hex."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    try:
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    except (RuntimeError, TypeError):  # dtypes without a byte view: hash the values
        h.update(repr(t.tolist()).encode())
    return h.hexdigest()


def value_fingerprint(value: Any) -> str:
    """A string that changes when ``value`` does: tensors by ``sha256``, others by ``repr``.

    Memory addresses (``<function f at 0x7f...>``) are stripped from reprs so that the same
    object built by another process or run gets the same fingerprint.
    """
    if isinstance(value, Tensor):
        return f"tensor:{tensor_digest(value)}"
    if isinstance(value, torch.Generator):
        return f"generator:{tensor_digest(value.get_state())}"
    if isinstance(value, (list, tuple)):
        parts = ", ".join(value_fingerprint(v) for v in value)
        return f"[{parts}]" if isinstance(value, list) else f"({parts})"
    if isinstance(value, dict):
        items = sorted((repr(k), value_fingerprint(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    return _ADDRESS.sub("", repr(value))


def model_fingerprint(method: Any) -> str | None:
    """Fingerprint of ``method.forward_func``: the weights of a module, or a function's name."""
    forward = getattr(method, "forward_func", None)
    if isinstance(forward, nn.Module):
        h = hashlib.sha256(type(forward).__qualname__.encode())
        for name, t in forward.state_dict().items():
            h.update(f"{name}={tensor_digest(t)};".encode())
        return f"module:{h.hexdigest()}"
    if callable(forward):
        return "callable:" + _ADDRESS.sub("", getattr(forward, "__qualname__", repr(forward)))
    return None


def manifest_fingerprint(manifest: dict) -> str:
    """``sha256`` of a manifest's canonical JSON."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def manifest_differences(old: dict, new: dict) -> list[str]:
    """Human-readable list of the settings in which two manifests differ."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "attribute_kwargs" and isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    diffs.append(
                        f"attribute_kwargs[{k!r}]: {_short(a.get(k))} -> {_short(b.get(k))}"
                    )
        else:
            diffs.append(f"{key}: {_short(a)} -> {_short(b)}")
    return diffs


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def chunk_problem(data: Any, chunk: int, start: int, stop: int, fingerprint: str) -> str | None:
    """Why a loaded chunk file is not chunk ``chunk`` of this run (``None``: it is).

    Checks the format, version, chunk index, manifest fingerprint, that ``ids`` is exactly
    ``start .. stop - 1`` and that every attribution (and target / delta) has one row per id.
    """
    if not isinstance(data, dict):
        return "not a chunk file"
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        return f"format {data.get('format')!r} version {data.get('version')!r}"
    if data.get("chunk") != chunk:
        return f"holds chunk {data.get('chunk')!r}"
    if data.get("fingerprint") != fingerprint:
        return "written with other settings (fingerprint differs)"
    ids = data.get("ids")
    if (
        not isinstance(ids, Tensor)
        or ids.dtype != torch.long
        or not torch.equal(ids, torch.arange(start, stop))
    ):
        return f"ids are not {start}..{stop - 1}"
    attrs = data.get("attributions")
    n = stop - start
    if (
        not isinstance(attrs, tuple)
        or not attrs
        or not all(isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n for a in attrs)
        or not isinstance(data.get("is_tuple"), bool)
    ):
        return "attributions are not a tuple of tensors with one row per id"
    for key in ("targets", "deltas"):
        v = data.get(key)
        if v is not None and not (isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n):
            return f"{key} do not have one row per id"
    return None


def load_chunk_lazily(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` and ``mmap=True``: reads data only when used."""
    return torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)


class AttributionShards:
    """Read the results of :func:`~captum_ext.dataset_attribution.attribute_dataset` from a folder.

    Only a finished run can be read: ``index.json`` is written after every chunk is saved and
    checked. The index is validated on opening (every key and type; chunks ``0 .. C - 1`` in
    order with the ids of :func:`chunk_bounds`, so each id once; file names of
    :func:`chunk_name`, which resolve inside ``out``; a ``sha256`` per chunk). Every chunk is
    checked again on reading: its bytes against the checksum (once per file in this reader,
    again if the file changed since), then ids and the fingerprint of the run's settings.

    Args:
        out: The results folder given to ``attribute_dataset``.

    Raises:
        ValueError: ``out`` has no ``index.json`` (the run did not finish, or this is not a
            results folder), an ``index.json`` that is not valid (the message names it and
            the problem), or files of another format or of another run; on reading, a chunk
            file whose checksum differs from the index's ("checksum mismatch").

    Examples:
        >>> shards = AttributionShards("runs/ig-val")
        >>> attributions = shards.load()  # (N, ...) in id order, like method.attribute
        >>> for ids, attr in shards.iter_chunks():  # or chunk by chunk, bounded memory
        ...     ...
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        path = self.out / INDEX
        if not path.is_file():
            raise ValueError(
                f"out: {self.out} has no {INDEX}: the run did not finish (call "
                "attribute_dataset again with the same arguments to resume it) or this is not "
                "a results folder of attribute_dataset"
            )
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"out: cannot read {path} ({err})") from err
        if (
            not isinstance(index, dict)
            or index.get("format") != FORMAT
            or index.get("version") != VERSION
        ):
            raise ValueError(
                f"out: {path} is not an index of attribute_dataset version {VERSION} "
                f"(format {index.get('format') if isinstance(index, dict) else None!r})"
            )
        problem = index_problem(index)
        if problem is not None:
            raise ValueError(f"out: {path} is not a valid index of attribute_dataset: {problem}")
        self._check_inside(path, index["chunks"])
        self.index: dict = index
        #: ``chunk -> (inode, size, mtime)`` of the chunk files whose checksum was verified.
        self._verified: dict[int, tuple[int, int, int]] = {}

    def _check_inside(self, index_path: Path, chunks: list[dict]) -> None:
        """ValueError if a listed chunk file resolves outside ``out`` (e.g. a symbolic link)."""
        folder = self.out.resolve()
        for entry in chunks:
            resolved = (self.out / entry["file"]).resolve()
            if not resolved.is_relative_to(folder):
                raise ValueError(
                    f"out: {index_path} lists {entry['file']}, which resolves to {resolved}, "
                    f"outside the results folder {folder}: refusing to read it"
                )

    def _check_checksum(self, entry: dict, path: Path) -> None:
        """ValueError unless ``path`` has the index's ``sha256``; verified once per file."""
        try:
            st = path.stat()
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self._verified.get(entry["chunk"]) == signature:
                return
            digest = file_sha256(path)
        except OSError as err:
            raise ValueError(f"out: cannot read {path} ({type(err).__name__}: {err})") from err
        if digest != entry["sha256"]:
            raise ValueError(
                f"out: {path}: checksum mismatch (sha256 {digest[:16]}..., {INDEX} records "
                f"{entry['sha256'][:16]}...): the file was replaced after the index was "
                "written; call attribute_dataset again with the same arguments to recompute "
                "or re-index it"
            )
        self._verified[entry["chunk"]] = signature

    def __len__(self) -> int:
        return int(self.index["n"])

    def __repr__(self) -> str:
        return (
            f"AttributionShards({str(self.out)!r}, n={len(self)}, "
            f"chunks={len(self.index['chunks'])}, method={self.index['method']!r})"
        )

    @property
    def is_tuple(self) -> bool:
        """Whether the method returned a tuple of tensors (else a single tensor)."""
        return bool(self.index["is_tuple"])

    @property
    def ids(self) -> Tensor:
        """The example ids of all chunks, in file order (``0 .. N-1`` for a checked run)."""
        return torch.cat([self._read(entry, lazy=True)["ids"] for entry in self.index["chunks"]])

    def _read(self, entry: dict, lazy: bool = False) -> dict:
        path = self.out / entry["file"]
        self._check_checksum(entry, path)
        try:
            data = load_chunk_lazily(path) if lazy else safe_torch_load(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"out: cannot read {path} ({type(err).__name__}: {err})") from err
        problem = chunk_problem(
            data, entry["chunk"], entry["start"], entry["stop"], self.index["fingerprint"]
        )
        if problem is not None:
            raise ValueError(f"out: {path} does not belong to this run: {problem}")
        return data

    def iter_chunks(self) -> Iterator[tuple[Tensor, TensorOrTuple]]:
        """Yield ``(ids, attributions)`` chunk by chunk, in id order.

        Yields:
            ``ids`` (LongTensor) and the attributions of those ids: a tensor, or a tuple of
            tensors if the method returned a tuple.
        """
        for entry in self.index["chunks"]:
            data = self._read(entry)
            attrs = data["attributions"]
            yield data["ids"], attrs if data["is_tuple"] else attrs[0]

    def load(self) -> TensorOrTuple:
        """All attributions, concatenated in id order, shaped as ``method.attribute`` returns.

        Returns:
            A tensor ``(N, ...)``, or a tuple of such tensors if the method returned a tuple.
        """
        parts = [self._read(entry)["attributions"] for entry in self.index["chunks"]]
        out = tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
        return out if self.is_tuple else out[0]

    def targets(self) -> Tensor | None:
        """The class targets used per example (LongTensor ``(N,)``), or ``None`` if not known.

        ``None`` when ``target=None`` (the method's default) or when a callable target returned
        something that is not one class index per example (e.g. tuple targets).
        """
        return self._column("targets")

    def deltas(self) -> Tensor | None:
        """Convergence deltas ``(N, ...)`` if run with ``return_convergence_delta=True``."""
        return self._column("deltas")

    def _column(self, key: str) -> Tensor | None:
        if not self.index[f"has_{key}"]:
            return None
        return torch.cat([self._read(entry, lazy=True)[key] for entry in self.index["chunks"]])
