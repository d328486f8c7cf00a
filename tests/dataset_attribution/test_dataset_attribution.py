"""attribute_dataset: results equal one attribute() call, resumes never lose or repeat an id.

Single-process runs happen in the test process; distributed ones in separate processes joined
by a Gloo group (``dist_launch.run_ranks``), with workers in ``tests/dataset_workers.py``.
``LoggedMethod`` records which ids each run attributed, so resumes are checked by counting ids.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from dataset_workers import LoggedMethod, build, make_method, read_log
from dist_launch import describe, run_ranks
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from captum_ext.attr import CAFO
from captum_ext.distributed import ShardSampler as DistShardSampler
from captum_ext.evaluation import AttributionShards, ShardSampler, attribute_dataset

N = 70
CHUNK = 16  # 70 = 4 * 16 + 6: an uneven last chunk
BATCH = 5  # batches of 5, 5, 5, 1 per chunk: batches never straddle chunks


def chunk_ids(chunks, n=N, size=CHUNK):
    return [i for c in chunks for i in range(c * size, min((c + 1) * size, n))]


def chunk_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("chunk-*.pt"))


@pytest.fixture
def data():
    model, x, y = build(N)
    return model, x, y, TensorDataset(x, y)


class Identity:
    """A method whose attributions are the inputs (NaN inputs give NaN attributions)."""

    def attribute(self, inputs, target=None, **kwargs):
        return inputs.clone()


class FirstRowOnly:
    """A method that forgets the batch dimension."""

    def attribute(self, inputs, target=None, **kwargs):
        return inputs[:1]


# ------------------------------------------------------------------ single process: correctness


def test_saliency_equals_one_call_in_id_order_with_uneven_last_chunk(data, tmp_path):
    model, x, y, ds = data
    out = tmp_path / "out"
    shards = attribute_dataset(Saliency(model), ds, out, chunk_size=CHUNK, batch_size=BATCH)
    expected = Saliency(model).attribute(x, target=y)
    assert len(shards) == N
    assert torch.equal(shards.ids, torch.arange(N))
    assert torch.allclose(shards.load(), expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(shards.targets(), y)
    assert shards.deltas() is None and not shards.is_tuple
    assert chunk_files(out) == [f"chunk-{c:06d}.pt" for c in range(5)]
    sizes = [len(ids) for ids, _ in shards.iter_chunks()]
    assert sizes == [16, 16, 16, 16, 6]
    index = json.loads((out / "index.json").read_text())
    assert index["world_size"] == 1 and index["n"] == N and index["shapes"] == [[6]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "Saliency" and manifest["chunk_size"] == CHUNK
    assert manifest["target"] == "label"
    # the files are plain tensors: loadable with weights_only
    record = torch.load(out / "chunk-000004.pt", weights_only=True)
    assert torch.equal(record["ids"], torch.arange(64, 70))
    assert ShardSampler is DistShardSampler


def test_loader_settings_int_target_and_convergence_delta(data, tmp_path):
    model, x, y, ds = data
    ig = IntegratedGradients(model)
    # the loader's batch size and collate_fn are used, its (shuffling) sampler is not
    loader = DataLoader(ds, batch_size=9, shuffle=True, num_workers=2)
    kwargs = {"n_steps": 8, "return_convergence_delta": True}
    shards = attribute_dataset(
        ig, loader, tmp_path / "ig", target=2, attribute_kwargs=kwargs, chunk_size=CHUNK,
        device="cpu", show_progress=True,
    )  # fmt: skip
    attr, delta = ig.attribute(x, target=2, **kwargs)
    assert torch.allclose(shards.load(), attr, rtol=1e-5, atol=1e-6)
    assert torch.allclose(shards.deltas(), delta, rtol=1e-5, atol=1e-6)
    assert torch.equal(shards.targets(), torch.full((N,), 2))


class TwoInputs(Dataset):
    """Items ((a, b), label): a model with two input tensors of different shapes."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(3)
        self.a, self.b = torch.randn(n, 4, generator=g), torch.randn(n, 2, 3, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return (self.a[i], self.b[i]), self.y[i]


class TwoInputNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(10, 3)

    def forward(self, a, b):
        return self.lin(torch.cat([a, b.flatten(1)], 1) ** 2)


def test_tuple_inputs_give_a_tuple_mirroring_one_call_and_callable_target(tmp_path):
    torch.manual_seed(0)
    model, ds = TwoInputNet().eval(), TwoInputs(37)
    calls = []

    def target(batch):
        calls.append(len(batch[1]))
        return batch[1]

    shards = attribute_dataset(
        Saliency(model), ds, tmp_path / "out", target=target, chunk_size=10, batch_size=4
    )
    expected = Saliency(model).attribute((ds.a, ds.b), target=ds.y)
    got = shards.load()
    assert isinstance(got, tuple) and len(got) == 2 and shards.is_tuple
    for g, e in zip(got, expected):
        assert g.shape == e.shape and torch.allclose(g, e, rtol=1e-5, atol=1e-7)
    assert sum(calls) == 37 and max(calls) == 4
    assert torch.equal(shards.targets(), ds.y)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["target"].startswith("callable:") and "target" in manifest["target"]


def test_captum_ext_method_with_default_target(data, tmp_path):
    model, x, _, _ = data
    # items without label: target=None lets CAFO use the predicted class
    shards = attribute_dataset(
        CAFO(model), TensorDataset(x), tmp_path / "cafo", target=None, chunk_size=CHUNK,
        batch_size=7,
    )  # fmt: skip
    assert torch.allclose(shards.load(), CAFO(model).attribute(x), rtol=1e-5, atol=1e-7)
    assert shards.targets() is None


# ------------------------------------------------------------------ single process: resuming


def test_resume_after_crash_keeps_finished_chunks_and_equals_uninterrupted(data, tmp_path):
    model, x, y, ds = data
    ref = attribute_dataset(
        LoggedMethod(Saliency(model), x), ds, tmp_path / "ref", chunk_size=CHUNK,
        batch_size=BATCH,
    ).load()  # fmt: skip
    out = tmp_path / "out"
    first = LoggedMethod(Saliency(model), x, stop_after=2 * CHUNK)
    with pytest.raises(RuntimeError, match="injected failure"):
        attribute_dataset(first, ds, out, chunk_size=CHUNK, batch_size=BATCH)
    assert chunk_files(out) == ["chunk-000000.pt", "chunk-000001.pt"]
    assert not (out / "index.json").exists()
    with pytest.raises(ValueError, match="index.json"):
        AttributionShards(out)

    second = LoggedMethod(Saliency(model), x)
    shards = attribute_dataset(second, ds, out, chunk_size=CHUNK, batch_size=BATCH)
    assert sorted(first.seen) == chunk_ids([0, 1])
    assert sorted(second.seen) == chunk_ids([2, 3, 4])  # finished chunks were not recomputed
    assert Counter(first.seen + second.seen) == Counter(range(N))
    assert Counter(shards.ids.tolist()) == Counter(range(N))
    assert torch.equal(shards.load(), ref)
    assert torch.equal(shards.targets(), y)

    third = LoggedMethod(Saliency(model), x)  # a finished run: nothing to do
    attribute_dataset(third, ds, out, chunk_size=CHUNK, batch_size=BATCH)
    assert third.seen == []


def test_corrupt_chunk_wrong_chunk_and_stray_temp_file_are_recomputed(data, tmp_path):
    model, x, _, ds = data
    out = tmp_path / "out"
    method = LoggedMethod(Saliency(model), x)
    ref = attribute_dataset(method, ds, out, chunk_size=CHUNK, batch_size=BATCH).load()
    path1 = out / "chunk-000001.pt"
    path1.write_bytes(path1.read_bytes()[: path1.stat().st_size // 2])  # truncated
    shutil.copy(out / "chunk-000000.pt", out / "chunk-000003.pt")  # a good file, wrong ids
    stray = out / ".chunk-000002.pt.k3j4h5.tmp"  # a half-written save of chunk 2
    stray.write_bytes(b"\x00garbage")
    (out / "index.json").unlink()
    rerun = LoggedMethod(Saliency(model), x)
    with pytest.warns(UserWarning, match=r"recomputing 2 chunk file\(s\)"):
        shards = attribute_dataset(rerun, ds, out, chunk_size=CHUNK, batch_size=BATCH)
    assert sorted(rerun.seen) == chunk_ids([1, 3])
    assert not stray.exists()
    assert not list(out.glob(".*.tmp"))
    assert Counter(shards.ids.tolist()) == Counter(range(N))
    assert torch.equal(shards.load(), ref)


def test_other_settings_in_the_same_folder_raise_and_leave_it_intact(data, tmp_path):
    model, x, _, ds = data
    out = tmp_path / "out"
    ig = IntegratedGradients(model)
    base = {"n_steps": 4, "baselines": torch.zeros(1, 6)}
    attribute_dataset(ig, ds, out, chunk_size=CHUNK, attribute_kwargs=base)
    before = AttributionShards(out).load()
    with pytest.raises(ValueError, match=r"chunk_size: 16 -> 8.*another folder"):
        attribute_dataset(ig, ds, out, chunk_size=8, attribute_kwargs=base)
    with pytest.raises(ValueError, match=r"attribute_kwargs\['n_steps'\]"):
        attribute_dataset(ig, ds, out, chunk_size=CHUNK, attribute_kwargs={**base, "n_steps": 5})
    other_baseline = {**base, "baselines": torch.ones(1, 6)}
    with pytest.raises(ValueError, match=r"attribute_kwargs\['baselines'\]: 'tensor:"):
        attribute_dataset(ig, ds, out, chunk_size=CHUNK, attribute_kwargs=other_baseline)
    other_model = IntegratedGradients(build(N, seed=1)[0])
    with pytest.raises(ValueError, match=r"model: 'module:"):
        attribute_dataset(other_model, ds, out, chunk_size=CHUNK, attribute_kwargs=base)
    with pytest.raises(ValueError, match=r"method: 'IntegratedGradients' -> 'Saliency'"):
        attribute_dataset(Saliency(model), ds, out, chunk_size=CHUNK)
    assert torch.equal(AttributionShards(out).load(), before)


# ------------------------------------------------------------------ distributed (Gloo, CPU)


def reference(n, method="saliency"):
    model, x, y = build(n)
    inner, kwargs = make_method(method, model)
    return inner.attribute(x, target=y, **kwargs)


@pytest.mark.parametrize(
    "world,n,chunk,batch,method", [(2, 64, 8, 4, "saliency"), (3, 61, 8, 3, "ig")]
)
def test_ranks_give_the_results_of_one_process(tmp_path, world, n, chunk, batch, method):
    out = tmp_path / "out"
    results = run_ranks(
        "dataset_workers:run", world, tmp_path, out=str(out), n=n, chunk_size=chunk,
        batch_size=batch, method=method, log_dir=str(tmp_path),
    )  # fmt: skip
    assert all(r.returncode == 0 for r in results), describe(results)
    shards = AttributionShards(out)
    assert shards.index["world_size"] == world
    assert Counter(shards.ids.tolist()) == Counter(range(n))
    n_chunks = -(-n // chunk)
    for rank in range(world):  # chunk c was computed by rank c % world, once
        mine = chunk_ids(range(rank, n_chunks, world), n, chunk)
        assert sorted(read_log(tmp_path / f"run-rank{rank}.log")) == mine
    model, x, y = build(n)
    inner, kwargs = make_method(method, model)
    one = attribute_dataset(
        inner, TensorDataset(x, y), tmp_path / "one", attribute_kwargs=kwargs, chunk_size=chunk,
        batch_size=batch,
    )  # fmt: skip
    assert torch.allclose(shards.load(), one.load(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(shards.load(), reference(n, method), rtol=1e-5, atol=1e-6)
    assert torch.equal(shards.targets(), y)


def test_killed_rank_fails_the_run_and_resume_computes_each_id_once(tmp_path):
    n, chunk, batch = 60, 8, 4  # chunks 0..7; rank 1 owns 1, 3, 5, 7
    out = tmp_path / "out"
    common = dict(out=str(out), n=n, chunk_size=chunk, batch_size=batch, log_dir=str(tmp_path))
    # rank 1 dies (os._exit) when it starts its second chunk, after saving chunk 1
    crashed = run_ranks(
        "dataset_workers:run", 2, tmp_path, pg_timeout=30, tag="first", die_rank=1,
        stop_after=chunk, **common,
    )  # fmt: skip
    assert all(r.returncode != 0 for r in crashed), describe(crashed)
    assert not (out / "index.json").exists()
    assert chunk_files(out) == [f"chunk-{c:06d}.pt" for c in (0, 1, 2, 4, 6)], describe(crashed)
    first = read_log(tmp_path / "first-rank0.log") + read_log(tmp_path / "first-rank1.log")
    assert sorted(read_log(tmp_path / "first-rank1.log")) == chunk_ids([1], n, chunk)
    expected = reference(n)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)

    # resume with 2 ranks: only rank 1's unfinished chunks are computed
    resumed = run_ranks("dataset_workers:run", 2, tmp_path, tag="second", **common)
    assert all(r.returncode == 0 for r in resumed), describe(resumed)
    assert read_log(tmp_path / "second-rank0.log") == []
    second = read_log(tmp_path / "second-rank1.log")
    assert sorted(second) == chunk_ids([3, 5, 7], n, chunk)
    assert Counter(first + second) == Counter(range(n))
    shards = AttributionShards(out)
    assert Counter(shards.ids.tolist()) == Counter(range(n))
    assert torch.allclose(shards.load(), expected, rtol=1e-5, atol=1e-7)

    # resume the same crash in one process instead
    model, x, y = build(n)
    alone = LoggedMethod(Saliency(model), x)
    one = attribute_dataset(alone, TensorDataset(x, y), copy, chunk_size=chunk, batch_size=batch)
    assert sorted(alone.seen) == chunk_ids([3, 5, 7], n, chunk)
    assert Counter(one.ids.tolist()) == Counter(range(n))
    assert torch.allclose(one.load(), shards.load(), rtol=1e-5, atol=1e-7)


def test_an_error_on_one_rank_fails_every_rank(tmp_path):
    out = tmp_path / "out"
    results = run_ranks(
        "dataset_workers:run", 2, tmp_path, pg_timeout=30, out=str(out), n=40, chunk_size=8,
        batch_size=8, fail_rank=1, stop_after=8,
    )  # fmt: skip
    assert [r.returncode for r in results] == [1, 1], describe(results)
    assert "attribute_dataset failed on rank 1" in results[0].stderr, describe(results)
    assert "injected failure" in results[1].stderr, describe(results)
    assert not (out / "index.json").exists()


# ------------------------------------------------------------------ bad input


class Stream(IterableDataset):
    def __iter__(self):
        yield from range(3)


@pytest.mark.parametrize(
    "change,error,match",
    [
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size must be an int"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"method": nn.Linear(6, 3)}, TypeError, "method must have an attribute"),
        ({"data": Stream()}, TypeError, "map-style dataset.*IterableDataset"),
        ({"data": DataLoader(Stream(), batch_size=2)}, TypeError, "map-style dataset"),
        ({"data": TensorDataset(torch.zeros(0, 6))}, ValueError, "data is empty"),
        ({"target": "labels"}, ValueError, "target must be 'label'"),
        ({"target": 1.5}, TypeError, "target must be 'label'"),
        ({"attribute_kwargs": {"target": 1}}, ValueError, "attribute_kwargs must not contain"),
        ({"attribute_kwargs": [1]}, TypeError, "attribute_kwargs must be a dict"),
        ({"device": "nonsense"}, ValueError, "device must be"),
        ({"out": 3}, TypeError, "out must be a folder path"),
    ],
)
def test_bad_arguments_name_the_argument(data, tmp_path, change, error, match):
    model, _, _, ds = data
    args = {"method": Saliency(model), "data": ds, "out": tmp_path / "out"} | change
    kwargs = {k: v for k, v in change.items() if k not in ("method", "data", "out")}
    with pytest.raises(error, match=match):
        attribute_dataset(args["method"], args["data"], args["out"], **kwargs)


def test_label_target_for_items_without_label(data, tmp_path):
    model, x, _, _ = data
    with pytest.raises(ValueError, match="target='label' but the items of data have no label"):
        attribute_dataset(Saliency(model), TensorDataset(x), tmp_path / "a")
    with pytest.raises(ValueError, match="target='label'"):
        attribute_dataset(Saliency(model), x, tmp_path / "b")  # a tensor: items are bare rows
    assert not (tmp_path / "a" / "index.json").exists()


def test_non_finite_attributions_name_the_chunk_and_are_not_saved(data, tmp_path):
    _, x, _, _ = data
    x = x.clone()
    x[20, :2] = float("nan")  # id 20 is in chunk 1
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"chunk 1 \(ids 16..31\) contain 2 non-finite values"):
        attribute_dataset(Identity(), TensorDataset(x), out, target=None, chunk_size=CHUNK)
    assert chunk_files(out) == ["chunk-000000.pt"]
    assert not (out / "index.json").exists()


def test_out_must_be_a_writable_folder(data, tmp_path):
    model, _, _, ds = data
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match="out must be a folder"):
        attribute_dataset(Saliency(model), ds, a_file)
    with pytest.raises(ValueError, match="out: cannot write to the results folder"):
        attribute_dataset(Saliency(model), ds, a_file / "sub")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.json").write_text("{}")
    with pytest.raises(ValueError, match="not a results folder"):
        attribute_dataset(Saliency(model), ds, foreign)
    assert (foreign / "index.json").read_text() == "{}"


def test_methods_that_break_the_output_contract(data, tmp_path):
    _, x, _, _ = data
    ds = TensorDataset(x)
    with pytest.raises(ValueError, match="method: attribute must return .* batch"):
        attribute_dataset(FirstRowOnly(), ds, tmp_path / "a", target=None)
    with pytest.raises(ValueError, match=r"return_convergence_delta=True.*\(attributions, delta\)"):
        attribute_dataset(
            Identity(), ds, tmp_path / "b", target=None,
            attribute_kwargs={"return_convergence_delta": True},
        )  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_moves_inputs_and_saves_on_cpu(data, tmp_path):
    model, x, y, ds = data
    shards = attribute_dataset(
        Saliency(model.cuda()), ds, tmp_path / "out", chunk_size=CHUNK, device="cuda"
    )
    got = shards.load()
    assert got.device.type == "cpu"
    assert torch.allclose(got, Saliency(model.cpu()).attribute(x, target=y), atol=1e-6)


def test_evaluation_reexports_the_dataset_runner():
    import captum_ext.dataset_attribution as runner_package
    import captum_ext.evaluation as evaluation

    assert evaluation.attribute_dataset is runner_package.attribute_dataset
    assert evaluation.AttributionShards is runner_package.AttributionShards
