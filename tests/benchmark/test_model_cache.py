"""A damaged model-cache file is retrained with a warning, not a crash of every run (issue 15).

Each case trains a tiny configuration (well under a second), damages its cache file, and trains
again: one ``UserWarning`` names the file and the problem, the model is retrained with exactly
the weights of the first training (training is seeded), the caller's RNG is untouched, and the
rewritten file is a plain cache hit on the next call.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from captum_ext.benchmark import train

TINY = {"n_train": 16, "n_test": 8, "epochs": 1, "size": 16}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CAPTUM_EXT_CACHE", str(tmp_path))
    return tmp_path


def _edit(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        payload = torch.load(path, weights_only=True)
        torch.save(change(payload), path)

    return damage


def _cut(keep: Callable[[int], int]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(path.read_bytes()[: keep(path.stat().st_size)])


def _extra_weight(payload: dict) -> dict:
    return {**payload, "state_dict": {**payload["state_dict"], "extra": torch.ones(1)}}


def _drop_first_weight(payload: dict) -> dict:
    state = OrderedDict(payload["state_dict"])
    state.pop(next(iter(state)))  # the other weights are the trained ones
    return {**payload, "state_dict": state}


def _shrink_last_weight(payload: dict) -> dict:
    state = OrderedDict(payload["state_dict"])
    key = next(k for k in reversed(state) if state[k].dim() > 0)
    state[key] = state[key][:1]
    return {**payload, "state_dict": state}


DAMAGED = [
    ("truncated", _cut(lambda size: size // 2), "cannot be read"),
    ("cut-tail", _cut(lambda size: size - 20), "cannot be read"),
    ("empty", lambda p: p.write_bytes(b""), "cannot be read"),
    ("text", lambda p: p.write_text("not a model\n"), "cannot be read"),
    ("not-a-dict", _edit(lambda payload: [1, 2]), "not a dict"),
    ("no-state-dict", _edit(lambda payload: {"info": payload["info"]}), "'state_dict'"),
    ("no-info", _edit(lambda payload: {"state_dict": payload["state_dict"]}), "'info'"),
    ("state-dict-not-dict", _edit(lambda payload: {**payload, "state_dict": [1]}), "'state_dict'"),
    ("missing-weight", _edit(_drop_first_weight), "does not fit"),
    ("wrong-shape", _edit(_shrink_last_weight), "does not fit"),
    ("extra-weight", _edit(_extra_weight), "does not fit"),
]  # fmt: skip


def _weights(trained) -> list[torch.Tensor]:
    return list(trained.model.state_dict().values())


@pytest.mark.parametrize("damage,problem", [pytest.param(d, w, id=n) for n, d, w in DAMAGED])
def test_damaged_cache_file_warns_retrains_and_is_rewritten(cache, damage, problem):
    first = train("small_cnn", "shapes", **TINY)
    assert not first.cache_hit
    damage(first.path)

    torch.manual_seed(3)
    before = torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = train("small_cnn", "shapes", **TINY)
    assert torch.equal(torch.get_rng_state(), before)  # the RNG contract holds on this path too
    assert [w.category for w in caught] == [UserWarning], [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert str(first.path) in message and problem in message and "retraining" in message
    assert caught[0].filename == __file__  # points at the caller of train()

    assert not again.cache_hit and again.path == first.path
    for a, b in zip(_weights(first), _weights(again), strict=True):
        assert torch.equal(a, b)  # a fresh training, not one started from half-loaded weights
    assert not again.model.training
    assert set(again.info) == set(first.info)
    payload = torch.load(again.path, weights_only=True)  # rewritten, loadable
    assert set(payload) == {"state_dict", "info"}
    assert [p.name for p in cache.iterdir()] == [first.path.name]  # no temporary left over

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = train("small_cnn", "shapes", **TINY)
    assert third.cache_hit
    for a, b in zip(_weights(first), _weights(third), strict=True):
        assert torch.equal(a, b)


def test_training_the_tiny_config_twice_gives_identical_weights(cache):
    """The premise of the test above: training is seeded and deterministic."""
    a = train("small_cnn", "shapes", **TINY)
    b = train("small_cnn", "shapes", force=True, **TINY)
    assert not a.cache_hit and not b.cache_hit
    for x, y in zip(_weights(a), _weights(b), strict=True):
        assert torch.equal(x, y)
    other = train("small_cnn", "shapes", **{**TINY, "seed": 1})
    assert not all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(other), strict=True))
