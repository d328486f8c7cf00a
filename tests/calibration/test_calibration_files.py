"""Damaged calibration files are refused on load, naming the file and the problem (issue 15).

Every damaged file starts from a real save of a fitted calibration (z-score, and POT with
``keep_reference=True`` so that every optional key is there), then is cut, emptied or edited
in one way. Valid saves, including the degenerate filters a fit can produce (dead filters,
filters with fewer than ``min_peaks`` peaks, SPOT-compatible fits), load back and score alike.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from captum_ext.calibration import Calibration, Layout, POTCalibration, ZScoreCalibration
from captum_ext.calibration._base import HEADER_KEYS

N_REF, N_FILTERS = 120, 4
KINDS = ("zscore", "pot")
CLASSES = {"zscore": ZScoreCalibration, "pot": POTCalibration}
POT_ONLY = ("pot",)


def _layout(counts: tuple[int, ...] = (2, 2)) -> Layout:
    return Layout([f"layer{i}" for i in range(len(counts))], list(counts), "h")


def _heavy(n: int, f: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, f, generator=g, dtype=torch.float64)
    return (u.pow(-0.25) - 1) * 1e-3  # Pareto-type tail, xi = 0.25


def _fit(cal: Calibration, ref: torch.Tensor, counts: tuple[int, ...] = (2, 2)) -> Calibration:
    cal.begin(_layout(counts), ref.shape[0])
    for part in torch.split(ref, 37):
        cal.update(part)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate filters warn; tested in test_zscore_pot
        return cal.finalize()


def _fitted(kind: str) -> Calibration:
    ref = _heavy(N_REF, N_FILTERS, 9)
    if kind == "zscore":
        return _fit(ZScoreCalibration(), ref)
    return _fit(POTCalibration(level=0.8, keep_reference=True), ref)


@pytest.fixture(params=KINDS)
def saved(request, tmp_path) -> tuple[str, Path]:
    """``(kind, path)`` of a real save of a fitted calibration."""
    path = tmp_path / f"{request.param}.pt"
    _fitted(request.param).save(path)
    return request.param, path


# ------------------------------------------------------------------ the table of damaged files


def _edit(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    """Damage by loading the real save, changing it in place and saving it again."""

    def damage(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        change(state)
        torch.save(state, path)

    return damage


def _replace(obj: Any) -> Callable[[Path], None]:
    """Damage by saving ``obj`` instead (a valid torch file, not a calibration)."""
    return lambda path: torch.save(obj, path)


def _raw(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """Damage the bytes of the real save."""
    return lambda path: path.write_bytes(change(path.read_bytes()))


def _drop(key: str) -> Callable[[Path], None]:
    return _edit(lambda s: s.pop(key))


def _set(key: str, value: Callable[[Any], Any]) -> Callable[[Path], None]:
    return _edit(lambda s: s.__setitem__(key, value(s[key])))


def _poke(key: str, value: float) -> Callable[[Path], None]:
    def change(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[0] = value
        return t

    return _set(key, change)


def _short(key: str) -> Callable[[Path], None]:
    return _set(key, lambda t: t[:3])


ZSCORE_KEYS = ("count", "mean", "m2")
POT_KEYS = ("level", "min_peaks", "spot_compat", "threshold", "xi", "sigma", "n_peaks")
FILTER_TENSORS = ("threshold", "xi", "sigma", "n_peaks")  # POT's per-filter tensors

DAMAGED = [
    # (id, kinds, damage, words the message must contain)
    ("truncated", KINDS, _raw(lambda b: b[: len(b) // 2]), ["cannot be read", "truncated"]),
    ("truncated-tail", KINDS, _raw(lambda b: b[:-10]), ["cannot be read"]),
    ("empty", KINDS, _raw(lambda b: b""), ["cannot be read", "empty"]),
    ("text", KINDS, _raw(lambda b: b"mean=0.1, std=2\n"), ["cannot be read"]),
    ("not-a-dict", KINDS, _replace([1, 2, 3]), ["not a saved captum-ext calibration"]),
    ("no-format-version", KINDS, _drop("format_version"), ["format_version"]),
    ("format-version", KINDS, _set("format_version", lambda v: 99), ["version 99"]),
    ("unknown-kind", KINDS, _set("kind", lambda v: "gauss"), ["unknown", "'gauss'", "'zscore'"]),
    ("kind-not-str", KINDS, _set("kind", lambda v: 3), ["unknown calibration kind 3"]),
    *[(f"missing-{k}", KINDS, _drop(k), ["missing key", repr(k)]) for k in HEADER_KEYS],
    *[(f"missing-{k}", KINDS, _drop(k), ["missing key", repr(k)]) for k in ZSCORE_KEYS],
    *[(f"missing-{k}", POT_ONLY, _drop(k), ["missing key", repr(k)]) for k in POT_KEYS],
    ("layer-counts-wrong", KINDS, _set("layer_counts", lambda v: [2, 3]), ["shape", "(5,)"]),
    ("layer-counts-fewer", KINDS, _set("layer_counts", lambda v: [1, 2]), ["shape", "(3,)"]),
    ("layer-names-fewer", KINDS, _set("layer_names", lambda v: v[:1]), ["layer_counts"]),
    ("layer-counts-not-int", KINDS, _set("layer_counts", lambda v: [2.0, 2.0]), ["layer_counts"]),
    ("layer-names-not-str", KINDS, _set("layer_names", lambda v: [1, 2]), ["layer_names"]),
    ("layout-hash-not-str", KINDS, _set("layout_hash", lambda v: 7), ["layout_hash"]),
    ("n-total-negative", KINDS, _set("n_total", lambda v: -1), ["'n_total'", ">= 0"]),
    ("n-total-not-count", KINDS, _set("n_total", lambda v: v + 1), ["'count'", "n_total"]),
    ("count-one", KINDS, _edit(lambda s: s.update(count=1, n_total=1)), ["'count'", ">= 2"]),
    ("count-float", KINDS, _set("count", lambda v: float(v)), ["'count'", "int"]),
    ("count-bool", KINDS, _set("count", lambda v: True), ["'count'", "int"]),
    ("mean-short", KINDS, _set("mean", lambda t: t[:3]), ["'mean'", "shape"]),
    ("mean-2d", KINDS, _set("mean", lambda t: t[None]), ["'mean'", "shape"]),
    ("m2-long", KINDS, _set("m2", lambda t: torch.cat([t, t])), ["'m2'", "shape"]),
    ("mean-nan", KINDS, _poke("mean", math.nan), ["'mean'", "non-finite"]),
    ("m2-inf", KINDS, _poke("m2", math.inf), ["'m2'", "non-finite"]),
    ("m2-negative", KINDS, _poke("m2", -1.0), ["'m2'", "below 0"]),
    ("mean-int", KINDS, _set("mean", lambda t: t.long()), ["'mean'", "floating-point"]),
    ("mean-list", KINDS, _set("mean", lambda t: t.tolist()), ["'mean'", "tensor"]),
    *[(f"{k}-short", POT_ONLY, _short(k), [repr(k), "shape"]) for k in FILTER_TENSORS],
    ("threshold-nan", POT_ONLY, _poke("threshold", math.nan), ["'threshold'", "non-finite"]),
    ("xi-nan", POT_ONLY, _poke("xi", math.nan), ["'xi'", "non-finite"]),
    ("sigma-inf", POT_ONLY, _poke("sigma", math.inf), ["'sigma'", "non-finite"]),
    ("sigma-zero", POT_ONLY, _poke("sigma", 0.0), ["'sigma'", "<= 0"]),
    ("n-peaks-float", POT_ONLY, _set("n_peaks", lambda t: t.double()), ["'n_peaks'", "integer"]),
    ("n-peaks-negative", POT_ONLY, _poke("n_peaks", -1), ["'n_peaks'", "below 0"]),
    ("n-peaks-too-many", POT_ONLY, _poke("n_peaks", N_REF), ["'n_peaks'", "n_total"]),
    ("reference-shape", POT_ONLY, _set("reference", lambda t: t[:, :-1]), ["'reference'", "shape"]),
    ("reference-nan", POT_ONLY, _poke("reference", math.nan), ["'reference'", "non-finite"]),
    ("level-one", POT_ONLY, _set("level", lambda v: 1.0), ["'level'", "(0, 1)"]),
    ("level-nan", POT_ONLY, _set("level", lambda v: math.nan), ["'level'", "(0, 1)"]),
    ("level-str", POT_ONLY, _set("level", lambda v: "0.8"), ["'level'", "number"]),
    ("min-peaks-zero", POT_ONLY, _set("min_peaks", lambda v: 0), ["'min_peaks'", ">= 1"]),
    ("spot-compat-two", POT_ONLY, _set("spot_compat", lambda v: 2), ["'spot_compat'", "0 or 1"]),
]  # fmt: skip

CASES = [
    pytest.param(kind, damage, words, id=f"{kind}-{name}")
    for name, kinds, damage, words in DAMAGED
    for kind in kinds
]


@pytest.mark.parametrize("kind,damage,words", CASES)
def test_damaged_file_raises_naming_the_file_and_the_problem(tmp_path, kind, damage, words):
    path = tmp_path / f"{kind}.pt"
    _fitted(kind).save(path)
    damage(path)
    for load in (Calibration.load, CLASSES[kind].load):
        with pytest.raises(ValueError) as err:
            load(path, layout=_layout())
        message = str(err.value)
        assert str(path) in message, message
        for word in words:
            assert word in message, (word, message)


def test_the_table_covers_every_saved_key(saved):
    kind, path = saved
    state = torch.load(path, weights_only=True)
    missing = {
        name.removeprefix("missing-")
        for name, kinds, _, _ in DAMAGED
        if kind in kinds and name.startswith("missing-")
    }
    optional = {"reference", "format_version"}  # optional; the version has its own cases
    assert set(state) - optional <= missing


def test_a_missing_file_is_an_os_error_naming_it(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        Calibration.load(path)


def test_another_kind_than_the_class_is_refused(saved):
    kind, path = saved
    other = POTCalibration if kind == "zscore" else ZScoreCalibration
    with pytest.raises(ValueError, match=f"holds a '{kind}' calibration, not '{other.kind}'"):
        other.load(path)


# ------------------------------------------------------------------ valid files load back


def _degenerate_reference() -> torch.Tensor:
    ref = _heavy(N_REF, 6, 3)
    ref[:, 0] = 0.0  # a dead filter: no peaks (xi = 0, sigma = 1 are saved)
    ref[:, 1] = 1.0  # five peaks only: the exponential fit
    ref[-5:, 1] = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    ref[:, 2] = 5.0  # constant: zero variance, std floored at score time
    return ref


VALID = [
    pytest.param(ZScoreCalibration, {}, id="zscore"),
    pytest.param(POTCalibration, {"level": 0.8}, id="pot"),
    pytest.param(POTCalibration, {"level": 0.5, "keep_reference": True}, id="pot-reference"),
    pytest.param(POTCalibration, {"level": 0.9, "min_peaks": 50}, id="pot-exponential-only"),
    pytest.param(POTCalibration, {"level": 0.8, "spot_compat": True}, id="pot-spot"),
    pytest.param(POTCalibration, {"level": 0.001}, id="pot-all-peaks"),
]


def _scores(cal: Calibration, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    s = cal.score(x)
    return tuple(s) if isinstance(s, tuple) else (s,)


@pytest.mark.parametrize("cls,options", VALID)
@pytest.mark.parametrize("reference", ["heavy", "degenerate", "float32-two-examples"])
def test_valid_saves_load_and_score_identically(tmp_path, cls, options, reference):
    if reference == "heavy":
        ref, counts = _heavy(N_REF, N_FILTERS, 9), (2, 2)
    elif reference == "degenerate":
        ref, counts = _degenerate_reference(), (1, 5)
    else:
        ref, counts = torch.rand(2, 3, generator=torch.Generator().manual_seed(0)), (3,)
    cal = _fit(cls(**options), ref, counts)
    path = tmp_path / "cal.pt"
    cal.save(path)
    back = Calibration.load(path, layout=_layout(counts))
    assert type(back) is cls and back.fitted and back.n_total == cal.n_total
    x = torch.cat([ref[:3], ref[:3] * 2 + 1e-3]).to(ref.dtype)
    for a, b in zip(_scores(cal, x), _scores(back, x), strict=True):
        assert torch.equal(a, b)
    ranks_a, ranks_b = cal.rank(x), back.rank(x)
    for a, b in zip(ranks_a, ranks_b, strict=True):
        assert torch.equal(a, b)
