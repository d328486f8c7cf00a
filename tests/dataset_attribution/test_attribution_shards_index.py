"""AttributionShards validates index.json and checks each chunk's checksum (issue 15).

A real results folder of 6 examples in 3 chunks of 2 is written by ``attribute_dataset``, then
its ``index.json`` is edited in one bad way per case: the reader must refuse it with a
``ValueError`` naming ``index.json`` and the problem, instead of loading 4 of 6 rows or
following a path out of the folder. A chunk file replaced after the index was written (by
another valid chunk file) is refused on reading: "checksum mismatch".
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from captum.attr import Saliency
from torch import nn
from torch.utils.data import TensorDataset

from captum_ext.dataset_attribution import AttributionShards, attribute_dataset
from captum_ext.dataset_attribution.shards import CHUNK_KEYS, INDEX_TYPES

N, CHUNK = 6, 2  # chunks 0, 1, 2


def _model_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(N, 4, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return model.eval(), x, y


@pytest.fixture
def run(tmp_path) -> tuple[Path, nn.Module, torch.Tensor, torch.Tensor]:
    """``(out, model, x, y)``: a finished results folder of ``Saliency(model)``."""
    model, x, y = _model_and_data()
    out = tmp_path / "out"
    attribute_dataset(Saliency(model), TensorDataset(x, y), out, chunk_size=CHUNK)
    return out, model, x, y


def _index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def _write_index(out: Path, index: Any) -> None:
    (out / "index.json").write_text(json.dumps(index))


# ------------------------------------------------------------------ the untouched folder


def test_untouched_folder_loads_exactly_what_saliency_gives(run):
    out, model, x, y = run
    shards = AttributionShards(out)
    per_chunk = torch.cat(
        [Saliency(model).attribute(x[i : i + CHUNK], target=y[i : i + CHUNK]) for i in (0, 2, 4)]
    )
    assert torch.equal(shards.load(), per_chunk)  # batches never straddle chunks: same calls
    assert torch.allclose(shards.load(), Saliency(model).attribute(x, target=y))
    assert torch.equal(shards.ids, torch.arange(N)) and torch.equal(shards.targets(), y)
    index = _index(out)
    for c, entry in enumerate(index["chunks"]):
        data = (out / f"chunk-{c:06d}.pt").read_bytes()
        assert entry == {
            "chunk": c,
            "file": f"chunk-{c:06d}.pt",
            "start": 2 * c,
            "stop": 2 * c + 2,
            "sha256": hashlib.sha256(data).hexdigest(),
        }


# ------------------------------------------------------------------ the table of bad indexes


def _chunks(change: Callable[[list], Any]) -> Callable[[dict], Any]:
    def edit(index: dict) -> dict:
        index["chunks"] = change(index["chunks"])
        return index

    return edit


def _entry(position: int, **values: Any) -> Callable[[dict], Any]:
    def edit(index: dict) -> dict:
        index["chunks"][position].update(values)
        return index

    return edit


def _drop_entry_key(key: str) -> Callable[[dict], Any]:
    def edit(index: dict) -> dict:
        del index["chunks"][1][key]
        return index

    return edit


def _top(**values: Any) -> Callable[[dict], Any]:
    return lambda index: {**index, **values}


def _drop(key: str) -> Callable[[dict], Any]:
    return lambda index: {k: v for k, v in index.items() if k != key}


BAD_INDEXES = [
    # (id, edit of the parsed index (or the folder path for absolute paths), words)
    ("chunk-dropped", _chunks(lambda c: [c[0], c[2]]), ["lists 2 chunks", "make 3"]),
    ("last-chunk-dropped", _chunks(lambda c: c[:2]), ["lists 2 chunks"]),
    ("no-chunks", _chunks(lambda c: []), ["lists 0 chunks"]),
    ("duplicated-entry", _chunks(lambda c: [c[0], c[0], c[2]]), ["entry 1", "is chunk 0"]),
    ("extra-duplicate", _chunks(lambda c: [c[0], c[1], c[1], c[2]]), ["lists 4 chunks"]),
    ("swapped", _chunks(lambda c: [c[1], c[0], c[2]]), ["entry 0", "is chunk 1"]),
    ("shifted", _entry(1, start=3, stop=5), ["entry 1", "covers ids [3, 5)", "[2, 4)"]),
    ("stop-short", _entry(2, stop=5), ["entry 2", "covers ids"]),
    ("start-float", _entry(1, start=2.0), ["entry 1", "covers ids"]),
    ("chunk-str", _entry(1, chunk="1"), ["entry 1", "is chunk '1'"]),
    ("chunk-bool", _entry(1, chunk=True), ["entry 1", "is chunk True"]),
    ("parent-path", _entry(0, file="../x/chunk-000000.pt"), ["'../x/chunk-000000.pt'", "folder"]),
    ("dot-path", _entry(0, file="./chunk-000000.pt"), ["'./chunk-000000.pt'"]),
    ("other-chunk-file", _entry(0, file="chunk-000001.pt"), ["'chunk-000001.pt'"]),
    ("absolute-path", "absolute", ["file", "chunk-000000.pt", "is not"]),
    ("n-smaller", _top(n=5), ["entry 2", "covers ids", "n=5"]),
    ("n-larger", _top(n=8), ["lists 3 chunks", "make 4"]),
    ("n-zero", _top(n=0), ["'n' and 'chunk_size' must be >= 1"]),
    ("n-str", _top(n="6"), ["'n'", "wrong type"]),
    ("n-bool", _top(n=True), ["'n'", "wrong type"]),
    ("n-float", _top(n=6.0), ["'n'", "wrong type"]),
    ("chunk-size-zero", _top(chunk_size=0), ["chunk_size=0"]),
    ("chunk-size-negative", _top(chunk_size=-2), ["chunk_size=-2"]),
    ("chunk-size-changed", _top(chunk_size=3), ["lists 3 chunks", "make 2"]),
    ("chunks-dict", _top(chunks={}), ["'chunks'", "wrong type"]),
    ("is-tuple-int", _top(is_tuple=1), ["'is_tuple'", "wrong type"]),
    ("fingerprint-none", _top(fingerprint=None), ["'fingerprint'", "wrong type"]),
    *[(f"missing-{k}", _drop(k), ["missing key", repr(k)]) for k in INDEX_TYPES],
    *[(f"entry-missing-{k}", _drop_entry_key(k), ["entry 1", repr(k)]) for k in CHUNK_KEYS],
    ("entry-not-dict", _chunks(lambda c: [c[0], [2, 4], c[2]]), ["entry 1", "not a dict"]),
    ("sha256-short", _entry(1, sha256="abc"), ["'sha256'", "64"]),
    ("sha256-upper", lambda i: _entry(1, sha256=i["chunks"][1]["sha256"].upper())(i), ["64"]),
    ("not-a-dict", lambda index: [index], ["not an index"]),
    ("other-version", _top(version=2), ["not an index", "version 1"]),
]  # fmt: skip


@pytest.mark.parametrize("edit,words", [pytest.param(e, w, id=n) for n, e, w in BAD_INDEXES])
def test_bad_index_raises_naming_index_json_and_the_problem(run, edit, words):
    out = run[0]
    index = _index(out)
    if edit == "absolute":
        index["chunks"][0]["file"] = str((out / "chunk-000000.pt").resolve())
    else:
        index = edit(index)
    _write_index(out, index)
    with pytest.raises(ValueError) as err:
        AttributionShards(out)
    message = str(err.value)
    assert str(out / "index.json") in message, message
    for word in words:
        assert word in message, (word, message)


def test_the_dropped_chunk_case_is_the_4_of_6_rows_case(run):
    """Before issue 15 this index loaded 4 of the 6 rows without complaint."""
    out = run[0]
    index = _index(out)
    index["chunks"] = [index["chunks"][0], index["chunks"][2]]
    _write_index(out, index)
    with pytest.raises(ValueError, match=r"index\.json.*lists 2 chunks.*each id once"):
        AttributionShards(out).load()


def test_an_index_that_is_not_json_names_the_file(run):
    out = run[0]
    (out / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot read .*index\.json"):
        AttributionShards(out)


def test_a_chunk_file_linked_out_of_the_folder_is_refused(run, tmp_path):
    out = run[0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = outside / "chunk-000000.pt"
    shutil.move(out / "chunk-000000.pt", target)
    (out / "chunk-000000.pt").symlink_to(target)
    with pytest.raises(ValueError) as err:
        AttributionShards(out)
    message = str(err.value)
    assert str(out / "index.json") in message and "outside the results folder" in message
    assert "chunk-000000.pt" in message


def test_a_link_inside_the_folder_is_followed(run):
    out = run[0]
    before = AttributionShards(out).load()
    (out / "chunk-000000.pt").rename(out / "kept.pt")
    (out / "chunk-000000.pt").symlink_to("kept.pt")
    assert torch.equal(AttributionShards(out).load(), before)


# ------------------------------------------------------------------ checksums


def test_a_chunk_file_replaced_by_another_valid_one_fails_its_checksum(run):
    out = run[0]
    shutil.copy(out / "chunk-000001.pt", out / "chunk-000000.pt")  # loadable, wrong content
    shards = AttributionShards(out)  # the index itself is fine
    reads = (shards.load, lambda: shards.ids, shards.targets, lambda: list(shards.iter_chunks()))
    for read in reads:
        with pytest.raises(ValueError) as err:
            read()
        message = str(err.value)
        assert "checksum mismatch" in message and str(out / "chunk-000000.pt") in message


def test_a_chunk_replaced_after_it_was_verified_is_checked_again(run):
    out = run[0]
    shards = AttributionShards(out)
    first = shards.load()
    assert torch.equal(shards.load(), first)  # verified once, read again
    shutil.copy(out / "chunk-000002.pt", out / "chunk-000001.pt")
    with pytest.raises(ValueError, match=r"chunk-000001\.pt: checksum mismatch"):
        shards.load()


def test_an_index_without_checksums_is_refused_and_a_rerun_rewrites_it(run):
    """Indexes written before checksums were stored: refused, and the advice works."""
    out, model, x, y = run
    expected = AttributionShards(out).load()
    index = _index(out)
    for entry in index["chunks"]:
        del entry["sha256"]
    _write_index(out, index)
    with pytest.raises(ValueError, match=r"index\.json.*no 'sha256'.*attribute_dataset again"):
        AttributionShards(out)
    shards = attribute_dataset(Saliency(model), TensorDataset(x, y), out, chunk_size=CHUNK)
    assert all("sha256" in entry for entry in _index(out)["chunks"])
    assert torch.equal(shards.load(), expected)


class IndexWatcher:
    """Saliency that records, at each call, whether the folder's index.json exists."""

    def __init__(self, model: nn.Module, out: Path) -> None:
        self.inner, self.out, self.seen = Saliency(model), out, []

    def attribute(self, inputs, target=None, **kwargs):
        self.seen.append((self.out / "index.json").is_file())
        return self.inner.attribute(inputs, target=target, **kwargs)


def test_resuming_a_finished_run_keeps_its_index_until_the_new_one(tmp_path):
    model, x, y = _model_and_data()
    out = tmp_path / "watched"
    first = IndexWatcher(model, out)
    old = attribute_dataset(first, TensorDataset(x, y), out, chunk_size=CHUNK)
    assert first.seen == [False, False, False]  # a fresh run: no index yet
    expected = old.load()  # a reader opened on the finished run
    (out / "chunk-000001.pt").unlink()  # lost: the resume recomputes it
    watcher = IndexWatcher(model, out)
    shards = attribute_dataset(watcher, TensorDataset(x, y), out, chunk_size=CHUNK)
    assert watcher.seen == [True]  # one batch (chunk 1), computed while the old index stood
    assert torch.equal(shards.load(), expected)
    assert torch.equal(old.load(), expected)  # the recomputed chunk has the same bytes
