"""``attribute_dataset(seed=...)``: randomised methods reproducible chunk by chunk (issue 15, 9).

A chunk recomputed on a resume (after other chunks, or alone) must equal its first computation,
both for a method that takes ``generator=`` (RelEx) and for one that draws from the global RNG
(SmoothGrad through NoiseTunnel). Without a seed the same runs differ, so the checks can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from captum.attr import NoiseTunnel, Saliency
from small_nets import bn_dropout_net
from torch.utils.data import TensorDataset

from captum_ext.attr import RelEx
from captum_ext.dataset_attribution import AttributionShards, attribute_dataset

N, CHUNK, BATCH = 8, 4, 2
X = torch.rand((N, 2, 6, 6), generator=torch.Generator().manual_seed(0))
X[BATCH : 2 * BATCH] = X[:BATCH]  # the second batch repeats the first: same images, own draws
Y = torch.tensor([0, 1, 0, 1, 2, 0, 2, 1])
DATA = TensorDataset(X, Y)


class SmoothGrad:
    """SmoothGrad as a Captum user writes it: noise from the global torch RNG."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.forward_func = model
        self.tunnel = NoiseTunnel(Saliency(model))

    def attribute(self, inputs: torch.Tensor, target=None) -> torch.Tensor:
        return self.tunnel.attribute(
            inputs, nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=target
        )


def _relex() -> RelEx:
    return RelEx(bn_dropout_net())


METHODS = {
    "RelEx-generator": (_relex, {"n_iter": 3, "n_samples": 2}),
    "SmoothGrad-global-rng": (lambda: SmoothGrad(bn_dropout_net()), {}),
}


def _run(kind: str, out: Path, seed: int | None, **kw) -> torch.Tensor:
    build, kwargs = METHODS[kind]
    return attribute_dataset(
        build(), DATA, out, attribute_kwargs=kwargs, chunk_size=CHUNK, batch_size=BATCH,
        seed=seed, **kw,
    ).load()  # fmt: skip


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_seeded_runs_are_identical_and_the_seed_matters(kind: str, tmp_path: Path) -> None:
    a = _run(kind, tmp_path / "a", seed=7)
    b = _run(kind, tmp_path / "b", seed=7)
    assert torch.equal(a, b)
    c = _run(kind, tmp_path / "c", seed=8)
    assert (a - c).abs().max() > 1e-4
    # batches draw from different streams (not one seed reused by every batch)
    assert (a[:BATCH] - a[BATCH : 2 * BATCH]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_a_recomputed_chunk_equals_its_first_computation(kind: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run(kind, out, seed=3)
    (out / "chunk-000001.pt").unlink()  # a crash lost chunk 1: the resume computes it alone
    assert torch.equal(_run(kind, out, seed=3), first)
    # a run computing only chunk 1 from a fresh folder (as the second rank of two would)
    other = tmp_path / "other"
    attribute_dataset(
        METHODS[kind][0](), DATA, other, attribute_kwargs=METHODS[kind][1], chunk_size=CHUNK,
        batch_size=BATCH, seed=3,
    )  # fmt: skip
    got = torch.load(other / "chunk-000001.pt", weights_only=True)["attributions"][0]
    assert torch.equal(got, first[CHUNK:])


def test_without_a_seed_a_recomputed_chunk_differs(tmp_path: Path) -> None:
    """The failure the seed fixes: global-RNG draws depend on what ran before them (so the
    checks above can fail). (RelEx without a generator repeats its draws on every call.)"""
    kind, out = "SmoothGrad-global-rng", tmp_path / "run"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        first = _run(kind, out, seed=None)
        (out / "chunk-000001.pt").unlink()
        again = _run(kind, out, seed=None)
    assert (again[CHUNK:] - first[CHUNK:]).abs().max() > 1e-4


def test_seeded_run_leaves_the_global_rng_and_records_its_settings(tmp_path: Path) -> None:
    state = torch.get_rng_state()
    _run("SmoothGrad-global-rng", tmp_path / "s", seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["batch_size"] == BATCH
    # the draws depend on the batching: resuming with another batch size is refused
    with pytest.raises(ValueError, match="batch_size"):
        attribute_dataset(
            SmoothGrad(bn_dropout_net()), DATA, tmp_path / "s", chunk_size=CHUNK, batch_size=4,
            seed=5,
        )  # fmt: skip
    attribute_dataset(Saliency(bn_dropout_net()), DATA, tmp_path / "u")
    unseeded = json.loads((tmp_path / "u" / "manifest.json").read_text())
    assert "seed" not in unseeded and "batch_size" not in unseeded
    assert isinstance(AttributionShards(tmp_path / "s").load(), torch.Tensor)


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        ({"seed": "1"}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"seed": -1}, ValueError, "seed"),
        ({"attribute_kwargs": {"generator": torch.Generator()}}, ValueError, "generator"),
        ({"seed": 1, "attribute_kwargs": {"gen": torch.Generator()}}, ValueError, "'gen'"),
    ],
)
def test_bad_seeding_arguments(kwargs: dict, error: type, needle: str, tmp_path: Path) -> None:
    with pytest.raises(error, match=needle):
        attribute_dataset(_relex(), DATA, tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()
