"""train() leaves every global RNG as it found it (issue 15, defect 6).

A cache hit used to build the network with the default initialisation, drawn from the global
torch RNG. Both paths now run on a fork of the CPU RNG only: the CUDA RNGs are neither read,
seeded nor restored (reading them initialises CUDA; ``torch.manual_seed`` would seed them for
good). Tiny configurations keep each training to well under a second.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from captum_ext.benchmark import train

TINY = {"n_train": 16, "n_test": 8, "epochs": 1, "size": 16}


def _global_states():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _assert_unchanged(before) -> None:
    torch_state, np_state, py_state = before
    assert torch.equal(torch.get_rng_state(), torch_state)
    now = np.random.get_state()
    assert now[0] == np_state[0] and np.array_equal(now[1], np_state[1])
    assert now[2:] == np_state[2:]
    assert random.getstate() == py_state


def _weights(trained) -> list[torch.Tensor]:
    return list(trained.model.state_dict().values())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTUM_EXT_CACHE", str(tmp_path))
    return tmp_path


def test_cache_miss_and_hit_leave_the_global_rngs_bit_identical(cache):
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    before = _global_states()
    first = train("small_cnn", "shapes", **TINY)
    assert not first.cache_hit
    _assert_unchanged(before)
    again = train("small_cnn", "shapes", **TINY)
    assert again.cache_hit and again.path == first.path
    _assert_unchanged(before)
    # retraining from another global state gives the same weights (they are a function of the
    # configuration, as the cache key assumes) and leaves that state alone too
    torch.manual_seed(8)
    before = _global_states()
    forced = train("small_cnn", "shapes", force=True, **TINY)
    assert not forced.cache_hit
    _assert_unchanged(before)
    for a, b, c in zip(_weights(first), _weights(again), _weights(forced)):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_train_keeps_off_the_cuda_rngs(cache, monkeypatch):
    """With a (pretended) GPU, train() neither reads, seeds nor restores a CUDA RNG: reading one
    initialises CUDA, and ``torch.manual_seed`` would reseed every CUDA generator for good (or at
    CUDA's lazy initialisation, later)."""
    calls: list[str] = []

    def record(name):
        return lambda *args, **kwargs: calls.append(name)

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in ("get_rng_state", "set_rng_state", "manual_seed", "manual_seed_all", "seed_all"):
        monkeypatch.setattr(torch.cuda, name, record(name))
    before = torch.get_rng_state()
    assert not train("small_cnn", "shapes", **TINY).cache_hit
    assert train("small_cnn", "shapes", **TINY).cache_hit
    assert calls == []
    assert torch.equal(torch.get_rng_state(), before)
