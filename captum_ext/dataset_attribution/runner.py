"""Attribute a whole dataset, sharded over ranks, saved in resumable chunk files.

:func:`attribute_dataset` cuts the ids ``0 .. N-1`` into chunks of ``chunk_size`` consecutive
ids; chunk ``c`` belongs to rank ``c % world_size``. Each rank attributes its chunks batch by
batch and saves each chunk atomically; rank 0 writes ``index.json`` last, after checking that
the chunk files hold every id exactly once. A crashed run is resumed by calling the function
again with the same arguments (also with another number of ranks): finished chunks are kept,
the rest is recomputed. The file format and the reader are in
:mod:`captum_ext.dataset_attribution.shards`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sized
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate
from torch.utils.data._utils.collate import default_convert

from captum_ext._io import atomic_write_text, remove_stale_temp_files
from captum_ext._model_state import eval_mode
from captum_ext.dataset_attribution._rank import RankRun, Source, TargetSpec
from captum_ext.dataset_attribution.shards import (
    FORMAT,
    INDEX,
    MANIFEST,
    VERSION,
    AttributionShards,
    chunk_bounds,
    chunk_name,
    chunk_problem,
    file_sha256,
    load_chunk_lazily,
    manifest_differences,
    manifest_fingerprint,
    model_fingerprint,
    value_fingerprint,
)
from captum_ext.distributed import agree, get_context


def attribute_dataset(
    method: Any,
    data: Dataset | DataLoader,
    out: str | os.PathLike,
    *,
    target: TargetSpec = "label",
    attribute_kwargs: dict | None = None,
    chunk_size: int = 256,
    batch_size: int | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    process_group: Any = None,
    distributed: bool | None = None,
    show_progress: bool = False,
) -> AttributionShards:
    """Run an attribution method over a whole dataset and save the results in chunk files.

    Works on one process, or on every rank of a ``torch.distributed`` job (each rank calls it
    with the same arguments). Ids ``0 .. N-1`` are cut into chunks of ``chunk_size``; chunk
    ``c`` is computed by rank ``c % world_size`` and saved atomically as
    ``out/chunk-{c:06d}.pt``. ``out/manifest.json`` records the settings; ``out/index.json`` is
    written last, when every id is saved exactly once. Calling again with the same arguments
    resumes a crashed run: chunk files that load and belong to this run are kept, the others
    (missing, truncated, from other settings) are recomputed, and half-written temporary files
    are never read. An exception on any rank makes every rank raise; a rank that dies makes the
    others fail in the final collective, and no index is written. The model behind ``method``
    (its ``forward_func``) runs in eval mode; every module's flag is restored afterwards.

    Dataset items are ``(inputs, label, ...)`` with ``inputs`` a tensor or a tuple of tensors
    (a multi-input model), or a bare tensor of inputs; batches are formed by the loader's
    ``collate_fn`` (default: ``default_collate``).

    Args:
        method: Anything with ``attribute(inputs, target=..., **kwargs)`` returning a tensor or
            a tuple of tensors with the batch on dim 0: a Captum or captum-ext attribution.
        data: A map-style dataset, or a ``DataLoader`` over one. Of a loader, its dataset,
            ``collate_fn``, ``num_workers``, ``pin_memory``, ``worker_init_fn``,
            ``multiprocessing_context``, ``timeout`` and ``batch_size`` are used; its sampler
            is ignored (ids are sharded by chunk), and so is its ``generator``: the workers'
            base seed comes from a fixed seed, the same in every run and resume. Loading
            never draws from the global torch RNG, which is left as it was, also when the
            call raises (draws of ``method`` itself are its own).
        out: Results folder (created if needed). Use one folder per run.
        target: ``"label"``: the second element of each item; ``None``: the method's default;
            an int: that class for every example; a callable ``target(batch) -> target``
            receiving the collated batch (as the loader yields it) and returning any Captum
            target for it.
        attribute_kwargs: Further keyword arguments of every ``attribute`` call, passed
            unchanged (so per-example tensors, e.g. baselines with N rows, do not fit; use
            ones that broadcast over a batch). Part of the run's fingerprint (tensors by their
            bytes, other values by ``repr``). With ``return_convergence_delta=True`` the
            method must return ``(attributions, delta)``; deltas are saved too. A
            ``torch.Generator`` is refused: shared by all batches, it would make a chunk's
            draws depend on the chunks computed before it; use ``seed``.
        chunk_size: Examples per chunk file (the unit of saving and of resuming).
        batch_size: Examples per ``attribute`` call (default: the loader's, else 32). Batches
            never straddle two chunks.
        seed: Makes a randomised method reproducible chunk by chunk. The call for the batch
            starting at id ``s`` of chunk ``c`` runs with the global torch RNG (CPU and the
            inputs' CUDA device) forked and seeded by ``(seed, c, s)``, and gets
            ``generator=`` a fresh ``torch.Generator`` with that seed when ``method.attribute``
            has a ``generator`` parameter. So a chunk recomputed on a resume, or by another
            rank, equals the first computation, and the caller's RNG is untouched. A seeded
            run records ``seed`` and ``batch_size`` in its manifest (the draws depend on how
            ids are batched). ``None`` (default): the method draws as it does on its own.
        device: Move inputs and tensor targets there (default: leave them where the dataset
            puts them). Results are saved on CPU.
        process_group: Group to shard over (default: the default group).
        distributed: ``None``: distributed iff ``torch.distributed`` is initialized with more
            than one process; ``True``: require it; ``False``: this process does all chunks.
        show_progress: Show a progress bar over this rank's examples.

    Returns:
        An :class:`~captum_ext.dataset_attribution.AttributionShards` reader of
        ``out`` (on every rank).

    Raises:
        TypeError: ``method`` has no ``attribute``, ``data`` is not a map-style dataset (or a
            loader over one), or an argument has the wrong type.
        ValueError: ``chunk_size`` or ``batch_size`` below 1, a negative ``seed``, a
            ``generator`` in ``attribute_kwargs`` (use ``seed``), an empty dataset, ``out`` not a
            writable folder or holding a run with other settings, ``target="label"`` for
            items without a label, attributions that are non-finite or lack the batch
            dimension.
        RuntimeError: On the other ranks, when one rank failed.

    Examples:
        >>> from captum.attr import IntegratedGradients
        >>> shards = attribute_dataset(
        ...     IntegratedGradients(model), val_loader, "runs/ig-val",
        ...     attribute_kwargs={"n_steps": 32}, chunk_size=512, device="cuda",
        ... )
        >>> attributions = shards.load()  # (N, ...) in dataset order
        >>> # under torchrun, every rank makes the same call; after a crash, call it again.
    """
    started = time.perf_counter()
    if not callable(getattr(method, "attribute", None)):
        raise TypeError(
            "method must have an attribute(inputs, target=...) method (a Captum or captum-ext "
            f"attribution), got {type(method).__name__}"
        )
    chunk_size = _positive_int("chunk_size", chunk_size)
    source = _source(data, batch_size)
    kwargs = _attribute_kwargs(attribute_kwargs)
    seed = _seed(seed)
    _check_target(target)
    device = _device(device)
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path (str or os.PathLike), got {out!r}")
    out = Path(out)
    n = len(source.dataset)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "n": n,
        "chunk_size": chunk_size,
        "method": type(method).__qualname__,
        "model": model_fingerprint(method),
        "target": _target_spec(target),
        "attribute_kwargs": {k: value_fingerprint(v) for k, v in sorted(kwargs.items())},
    }
    if seed is not None:  # (absent otherwise, so unseeded runs keep their fingerprint)
        manifest.update(seed=seed, batch_size=source.batch_size)
    ctx = get_context(process_group, distributed)
    rank, world = (0, 1) if ctx is None else (ctx.rank, ctx.world_size)
    with agree(ctx, "attribute_dataset (preparing out)"):
        if rank == 0:
            _prepare_out(out, manifest)
    with agree(ctx, "attribute_dataset"):
        _check_manifest(out, manifest)
        run = RankRun(method, source, out, manifest, target, kwargs, device, rank, world, seed)
        with eval_mode(method):  # the model behind the method, flags restored afterwards
            run.run(show_progress)
    with agree(ctx, "attribute_dataset (writing the index)"):
        if rank == 0:
            _write_index(out, manifest, world, time.perf_counter() - started)
    return AttributionShards(out)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _source(data: Any, batch_size: int | None) -> Source:
    kwargs: dict = {}
    if isinstance(data, DataLoader):
        dataset, collate = data.dataset, data.collate_fn
        if collate is default_convert:  # a loader with automatic batching off
            collate = default_collate
        if data.num_workers > 0:
            kwargs = {
                "num_workers": data.num_workers,
                "worker_init_fn": data.worker_init_fn,
                "multiprocessing_context": data.multiprocessing_context,
                "prefetch_factor": data.prefetch_factor,
            }
        kwargs.update(pin_memory=data.pin_memory, timeout=data.timeout)
        default_bs = data.batch_size or 32
    else:
        dataset, collate, default_bs = data, default_collate, 32
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "data must be a map-style dataset (or a DataLoader over one), got an "
            f"IterableDataset ({type(dataset).__name__}): resumable runs address examples by "
            "id, which needs __getitem__ and __len__"
        )
    if not (hasattr(dataset, "__getitem__") and isinstance(dataset, Sized)):
        raise TypeError(
            "data must be a map-style dataset with __getitem__ and __len__ (or a DataLoader "
            f"over one), got {type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise ValueError("data is empty: there is nothing to attribute")
    bs = default_bs if batch_size is None else _positive_int("batch_size", batch_size)
    return Source(dataset, collate, bs, kwargs)


def _attribute_kwargs(attribute_kwargs: dict | None) -> dict:
    if attribute_kwargs is None:
        return {}
    if not isinstance(attribute_kwargs, dict) or not all(
        isinstance(k, str) for k in attribute_kwargs
    ):
        raise TypeError(f"attribute_kwargs must be a dict of str keys, got {attribute_kwargs!r}")
    for reserved in ("inputs", "target"):
        if reserved in attribute_kwargs:
            raise ValueError(
                f"attribute_kwargs must not contain {reserved!r}: "
                + ("inputs come from data" if reserved == "inputs" else "use target= instead")
            )
    for key, value in attribute_kwargs.items():
        if isinstance(value, torch.Generator):
            raise ValueError(
                f"attribute_kwargs[{key!r}] is a torch.Generator: shared by every batch, it makes "
                "a chunk's draws depend on the chunks computed before it, so a resumed run or "
                "another rank would draw differently. Pass seed=... instead: each batch then "
                "gets a generator seeded by (seed, chunk, first id)"
            )
    return dict(attribute_kwargs)


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int >= 0 or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


def _check_target(target: Any) -> None:
    if isinstance(target, str):
        if target != "label":
            raise ValueError(f"target must be 'label', None, an int or a callable, got {target!r}")
    elif not (
        target is None
        or (isinstance(target, int) and not isinstance(target, bool))
        or callable(target)
    ):
        raise TypeError(
            "target must be 'label', None, an int or a callable(batch) -> target, "
            f"got {type(target).__name__}"
        )


def _target_spec(target: TargetSpec) -> Any:
    """How the manifest records ``target``: as given, or a callable by its qualified name."""
    if callable(target):
        name = getattr(target, "__qualname__", None)
        if name is None:
            return "callable:" + value_fingerprint(target)
        return f"callable:{getattr(target, '__module__', '')}.{name}"
    return target


def _device(device: Any) -> torch.device | None:
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be a torch.device or a device string, got {device!r}"
        ) from err


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"out: cannot read {path} ({err}); use another folder for a new run"
        ) from err


def _prepare_out(out: Path, manifest: dict) -> None:
    """Rank 0: create ``out``, check or write the manifest, drop stale temp files.

    Only temporary files of dead writers are removed (see :mod:`captum_ext._io`): another run
    saving into the same folder keeps its own. The index of a finished run that is resumed is
    kept, for readers that may be using it: :func:`_write_index` replaces it atomically at the
    end, and its checksums make a reader refuse a chunk file rewritten meanwhile.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, {out} is a file")
    manifest_path, index_path = out / MANIFEST, out / INDEX
    if manifest_path.is_file():
        _compare(out, _read_json(manifest_path), manifest)
    elif index_path.exists():
        raise ValueError(
            f"out: {out} holds an {INDEX} but no {MANIFEST}: it is not a results folder of "
            "attribute_dataset; use another folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(manifest, indent=1, sort_keys=True), manifest_path)
        remove_stale_temp_files(out, _is_folder_temp)
    except OSError as err:
        raise ValueError(f"out: cannot write to the results folder {out} ({err})") from err


def _is_folder_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file of a manifest or index save."""
    return name.startswith((f".{MANIFEST}.", f".{INDEX}.")) and name.endswith(".tmp")


def _compare(out: Path, old: Any, new: dict) -> None:
    if not isinstance(old, dict):
        raise ValueError(f"out: {out / MANIFEST} is not a manifest; use another folder")
    diffs = manifest_differences(old, new)
    if diffs:
        raise ValueError(
            f"out: {out} holds a run with other settings ({'; '.join(diffs)}). Resume only "
            "with the same arguments, or use another folder (out=...) for a new run"
        )


def _check_manifest(out: Path, manifest: dict) -> None:
    """Every rank: the folder's manifest is this run's (catches ranks called differently)."""
    _compare(out, _read_json(out / MANIFEST), manifest)


def _write_index(out: Path, manifest: dict, world: int, elapsed: float) -> None:
    """Rank 0, after every rank finished: check the chunk files, then write ``index.json``.

    Each chunk entry records the ``sha256`` of its file's bytes, which the reader verifies.
    """
    n, size = manifest["n"], manifest["chunk_size"]
    fingerprint = manifest_fingerprint(manifest)
    counts = torch.zeros(n, dtype=torch.long)
    entries, layout, has_targets, has_deltas = [], None, True, True
    for c in range(-(-n // size)):
        start, stop = chunk_bounds(c, n, size)
        path = out / chunk_name(c)
        try:
            data = load_chunk_lazily(path)
        except Exception as err:  # noqa: BLE001
            raise RuntimeError(
                f"attribute_dataset: chunk file {path} is missing or unreadable after every "
                f"rank finished ({type(err).__name__}: {err}); was it removed meanwhile?"
            ) from err
        problem = chunk_problem(data, c, start, stop, fingerprint)
        if problem is not None:
            raise RuntimeError(f"attribute_dataset: {path} is not of this run: {problem}")
        counts += torch.bincount(data["ids"], minlength=n)
        this = (
            data["is_tuple"],
            [list(a.shape[1:]) for a in data["attributions"]],
            [str(a.dtype) for a in data["attributions"]],
        )
        if layout is not None and this != layout:
            raise RuntimeError(
                f"attribute_dataset: chunk {c} has attributions {this}, chunk 0 has {layout}"
            )
        layout = this
        has_targets &= data["targets"] is not None
        has_deltas &= data["deltas"] is not None
        try:
            digest = file_sha256(path)
        except OSError as err:
            raise RuntimeError(
                f"attribute_dataset: chunk file {path} became unreadable while it was indexed "
                f"({type(err).__name__}: {err}); was it removed meanwhile?"
            ) from err
        entry = {"chunk": c, "file": chunk_name(c), "start": start, "stop": stop}
        entries.append({**entry, "sha256": digest})
    if not bool((counts == 1).all()):
        raise RuntimeError(
            f"attribute_dataset: the chunk files hold {int((counts == 0).sum())} ids never and "
            f"{int((counts > 1).sum())} ids more than once"
        )
    # the manifest's n >= 1 (attribute_dataset refuses empty data), so the loop ran at least once
    assert layout is not None
    index = {
        "format": FORMAT,
        "version": VERSION,
        "n": n,
        "chunk_size": size,
        "fingerprint": fingerprint,
        "method": manifest["method"],
        "is_tuple": layout[0],
        "shapes": layout[1],
        "dtypes": layout[2],
        "has_targets": has_targets,
        "has_deltas": has_deltas,
        "world_size": world,
        "elapsed_s": round(elapsed, 3),
        "chunks": entries,
    }
    atomic_write_text(json.dumps(index, indent=1), out / INDEX)
