"""attribute_dataset leaves the global torch RNG as it found it (issue 15, defect 6).

Iterating a DataLoader draws the base seed of its workers from the global RNG unless the loader
has a generator of its own; attribute_dataset builds its loader with one, on success, on an
error midway and when the user passes a loader (whose sampler and generator are not used).
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import Saliency
from dataset_workers import build
from torch.utils.data import DataLoader, TensorDataset

from captum_ext.dataset_attribution import attribute_dataset

N, CHUNK, BATCH = 20, 8, 4


@pytest.fixture
def data():
    model, x, y = build(N)  # seeds the global RNG: take states after this
    return model, x, y, TensorDataset(x, y)


class RaiseOnBatch(Saliency):
    """Saliency that raises on call ``fail_at`` (1-based; ``None``: never) and counts calls."""

    def __init__(self, model, fail_at: int | None) -> None:
        super().__init__(model)
        self.fail_at, self.calls = fail_at, 0

    def attribute(self, inputs, target=None, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"boom on batch {self.calls}")
        return super().attribute(inputs, target=target, **kwargs)


def _loaders(ds):
    g = torch.Generator().manual_seed(5)
    return {
        "dataset": ds,
        "shuffling-loader": DataLoader(ds, batch_size=BATCH, shuffle=True),
        "loader-with-generator": DataLoader(ds, batch_size=BATCH, shuffle=True, generator=g),
        "loader-with-workers": DataLoader(ds, batch_size=BATCH, num_workers=2),
    }


@pytest.mark.parametrize(
    "kind", ["dataset", "shuffling-loader", "loader-with-generator", "loader-with-workers"]
)
def test_a_successful_run_leaves_the_global_rng_bit_identical(data, tmp_path, kind):
    model, x, y, ds = data
    source = _loaders(ds)[kind]
    before = torch.get_rng_state()
    shards = attribute_dataset(
        Saliency(model), source, tmp_path / "out", chunk_size=CHUNK, batch_size=BATCH
    )
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.allclose(shards.load(), Saliency(model).attribute(x, target=y))
    # a resumed (already complete) run does not draw either
    attribute_dataset(Saliency(model), source, tmp_path / "out", chunk_size=CHUNK, batch_size=4)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("kind", ["dataset", "shuffling-loader", "loader-with-workers"])
def test_a_method_raising_on_the_second_batch_leaves_the_global_rng_bit_identical(
    data, tmp_path, kind
):
    model, x, y, ds = data
    source = _loaders(ds)[kind]
    method = RaiseOnBatch(model, fail_at=2)
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom on batch 2"):
        attribute_dataset(method, source, tmp_path / "out", chunk_size=CHUNK, batch_size=BATCH)
    assert method.calls == 2
    assert torch.equal(torch.get_rng_state(), before)
    # the resumed run finishes and draws nothing either
    method.fail_at = None
    shards = attribute_dataset(method, source, tmp_path / "out", chunk_size=CHUNK, batch_size=BATCH)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.allclose(shards.load(), Saliency(model).attribute(x, target=y))


def test_errors_found_midway_leave_the_global_rng_bit_identical(data, tmp_path):
    model, x, y, _ = data
    before = torch.get_rng_state()
    # items without a label: found on the first batch, after the loader started
    with pytest.raises(ValueError, match="no label"):
        attribute_dataset(Saliency(model), TensorDataset(x), tmp_path / "a", chunk_size=CHUNK)
    assert torch.equal(torch.get_rng_state(), before)

    # non-finite attributions: found when the first chunk is saved
    class NaNs:
        def attribute(self, inputs, target=None, **kwargs):
            return torch.full_like(inputs, float("nan"))

    with pytest.raises(ValueError, match="non-finite"):
        attribute_dataset(NaNs(), TensorDataset(x, y), tmp_path / "b", chunk_size=CHUNK)
    assert torch.equal(torch.get_rng_state(), before)
