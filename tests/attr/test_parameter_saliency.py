"""ParameterSaliency: exact batched profiles, filter layout, fit/score/rank, persistence."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from captum_ext.attr import ParameterSaliency
from captum_ext.calibration import POTCalibration, ZScoreCalibration


def _loop_profiles(model: nn.Module, layers, x, y, params=("weight",)) -> torch.Tensor:
    """Independent reference: batch-1 backward on a copy, mean |grad| per output row."""
    rows = []
    model = _copy(model).eval()
    names = {id(m): n for n, m in model.named_modules()}
    mods = [dict(model.named_modules())[n] for n in layers]
    for i in range(x.shape[0]):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        parts = []
        for m in mods:
            for p in params:
                g = getattr(m, p).grad
                parts.append(g.abs().reshape(g.shape[0], -1).mean(1))
        rows.append(torch.cat(parts))
    assert names
    return torch.stack(rows)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


def test_small_cnn_batched_equals_batch1_loop(shapes_model, shapes_batch) -> None:
    model = shapes_model.model
    x, y, _ = shapes_batch
    ps = ParameterSaliency(model)
    conv_names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    ref = _loop_profiles(model, conv_names, x[:6], y[:6])
    for method in ("hooks", "func"):
        prof = ps.profiles(x[:6], target=y[:6], internal_batch_size=4, method=method)
        _close(prof, ref)
    parts = ps.attribute(x[:6], target=y[:6])
    assert isinstance(parts, list) and len(parts) == 4
    _close(torch.cat(parts, 1), ref)
    single = ParameterSaliency(model, layers=model.fc).attribute(x[:3], target=y[:3])
    _close(single, _loop_profiles(model, ["fc"], x[:3], y[:3]))


def test_resnet18_batched_equals_loop_and_counts() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=6)
    ps = ParameterSaliency(model)
    assert len(ps.filters) == 4800
    assert ps.filters.flat_index("layer4.0.conv1", 0) == 2240
    assert ps.filters.lookup(2240)[:2] == ("layer4.0.conv1", "weight")
    for f in (0, 63, 64, 1000, 4799):
        mod, _, _, idx, _ = ps.filters.lookup(f)
        assert ps.filters.flat_index(mod, idx) == f
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 5, 2])
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    _close(ps.profiles(x, y, internal_batch_size=2), _loop_profiles(model, names, x, y))
    r50 = ParameterSaliency(torchvision.models.resnet50(weights=None))
    assert len(r50.filters) == 26560
    groups = r50.group_of()
    assert {g: groups.count(g) for g in set(groups)} == {
        "conv1": 64,
        "conv2_x": 1408,
        "conv3_x": 3584,
        "conv4_x": 10240,
        "conv5_x": 11264,
    }


class _Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Linear(5, 8)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.up = nn.ConvTranspose1d(4, 3, 2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)  # (N, 4, 8)
        o, _ = self.att(h, h, h)
        o = self.emb(x) + o  # emb used twice: contributions summed before the abs
        u = self.up(o).mean(-1)  # (N, 3)
        return self.fc(o.mean(1)) + u


def test_attention_linear_and_shared_layers_equal_loop() -> None:
    torch.manual_seed(0)
    model = _Attn()
    x, y = torch.randn(3, 4, 5), torch.tensor([0, 1, 2])
    ps = ParameterSaliency(model, layers=[model.fc, model.att, model.emb, model.up])
    t = ps.filters
    assert t.layer_names == ["emb", "att", "up", "fc"]
    assert t.kind[8:14] == ["q", "q", "k", "k", "v", "v"] and t.head[8:14] == [0, 1, 0, 1, 0, 1]
    assert t.flat_index("att", 1, kind="v") == 13
    prof = ps.profiles(x, y)
    m = _copy(model).eval()
    ref = []
    for i in range(3):
        m.zero_grad()
        nn.functional.cross_entropy(m(x[i : i + 1]), y[i : i + 1]).backward()
        ref.append(
            torch.cat(
                [
                    m.emb.weight.grad.abs().mean(1),
                    m.att.in_proj_weight.grad.abs().reshape(6, -1).mean(1),
                    m.up.weight.grad.abs().transpose(0, 1).reshape(3, -1).mean(1),
                    m.fc.weight.grad.abs().mean(1),
                ]
            )
        )
    _close(prof, torch.stack(ref))
    lin = ParameterSaliency(model, layers=[model.emb, model.fc])
    _close(lin.profiles(x, y, method="hooks"), lin.profiles(x, y, method="func"))


@pytest.mark.parametrize("chunk_numbers", [1, 1 << 40])
def test_profiles_do_not_depend_on_the_example_chunking(monkeypatch, chunk_numbers) -> None:
    """One example's gradient at a time, or all at once: the same exact profiles (incl. a
    layer called twice per forward, whose calls are summed before the abs)."""
    from captum_ext.attr._utils import per_sample_grads

    monkeypatch.setattr(per_sample_grads, "_CHUNK_NUMBERS", chunk_numbers)
    torch.manual_seed(0)
    model = _Attn()
    x, y = torch.randn(5, 4, 5), torch.tensor([0, 1, 2, 1, 0])
    lin = ParameterSaliency(model, layers=[model.emb, model.fc])
    _close(lin.profiles(x, y, method="hooks"), lin.profiles(x, y, method="func"))
    net = torchvision.models.resnet18(weights=None, num_classes=6)
    xs, ys = torch.rand(3, 3, 32, 32), torch.tensor([0, 5, 2])
    names = ["conv1", "layer2.0.conv2", "layer3.1.conv1", "layer4.0.conv1"]
    ps = ParameterSaliency(net, layers=[dict(net.named_modules())[n] for n in names])
    _close(ps.profiles(xs, ys), _loop_profiles(net, names, xs, ys))


def test_attribute_returns_one_result_per_listed_layer_in_the_given_order() -> None:
    """Captum's layer contract: results pair with the layers as listed (order and repeats),
    while the flat profile keeps named_modules() order."""
    torch.manual_seed(0)
    model = _Attn()
    x, y = torch.randn(3, 4, 5), torch.tensor([0, 1, 2])
    flat = ParameterSaliency(model, layers=[model.emb, model.fc]).profiles(x, y)
    n_emb = model.emb.out_features
    parts = ParameterSaliency(model, [model.fc, model.emb, model.fc]).attribute(x, y)
    assert [p.shape[1] for p in parts] == [model.fc.out_features, n_emb, model.fc.out_features]
    torch.testing.assert_close(parts[0], flat[:, n_emb:], rtol=0, atol=0)
    torch.testing.assert_close(parts[1], flat[:, :n_emb], rtol=0, atol=0)
    torch.testing.assert_close(parts[2], parts[0], rtol=0, atol=0)


def test_constructor_follows_captum_layer_argument_order() -> None:
    """(forward_func, layer, device_ids) positionally; loss_fn is keyword-only and checked."""
    model = _Attn()
    ps = ParameterSaliency(model, model.fc, [0])
    assert ps.device_ids == [0] and ps.loss_fn is not None and callable(ps.loss_fn)
    with pytest.raises(TypeError):
        ParameterSaliency(model, model.fc, None, lambda o, t: o.sum(1))  # type: ignore[misc]
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        ParameterSaliency(model, model.fc, loss_fn=[0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="device_ids"):
        ParameterSaliency(model, model.fc, "0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="layers must be"):
        ParameterSaliency(model, "fc")  # type: ignore[arg-type]


def test_no_side_effects_even_on_error(shapes_model, shapes_batch) -> None:
    model = _copy(shapes_model.model)
    x, y, _ = shapes_batch
    model.train()
    model.features[1].eval()
    model.features[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    xg = x[:2].clone().requires_grad_()
    ps = ParameterSaliency(model)
    ps.attribute(xg, target=y[:2])
    with pytest.raises(ValueError, match="target"):
        ps.attribute(x[:2], target=[0, 99])
    assert [m.training for m in model.modules()] == flags
    assert not model.features[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters()) and xg.grad is None
    assert all(not m._forward_hooks for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_targets_forms_and_bad_input(shapes_model, shapes_batch) -> None:
    ps = ParameterSaliency(shapes_model.model, layers=shapes_model.model.fc)
    x, _, _ = shapes_batch
    a = ps.attribute(x[:3], target=2)
    assert torch.equal(a, ps.attribute(x[:3], target=[2, 2, 2]))
    assert torch.equal(a, ps.attribute(x[:3], target=torch.tensor([2, 2, 2])))
    pred = shapes_model.model.eval()(x[:3]).argmax(1)
    assert torch.equal(ps.attribute(x[:3]), ps.attribute(x[:3], target=pred))
    with pytest.raises(ValueError, match="tuple"):
        ps.attribute(x[:3], target=(1, 2))
    with pytest.raises(ValueError, match="one class per example"):
        ps.attribute(x[:3], target=[1, 2])
    bad = x[:2].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        ps.attribute(bad, target=0)
    assert ps.multiplies_by_inputs is False and not ps.has_convergence_delta()
    with pytest.raises(NotImplementedError):
        ps.attribute_future()


def test_fit_score_rank_save_load(shapes_model, shapes_batch, tmp_path) -> None:
    model = shapes_model.model
    x, y, _ = shapes_batch
    ps = ParameterSaliency(model)
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=5)
    with pytest.raises(ValueError, match="empty"):
        ps.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:0], y[:0])))
    cal = ps.fit(loader, ZScoreCalibration())
    prof = torch.cat([ps.profiles(xb, yb) for xb, yb in loader]).double()
    torch.testing.assert_close(cal.mean, prof.mean(0))
    torch.testing.assert_close(cal.std, prof.std(0))
    z = ps.score(x[:2], target=y[:2])
    # profiles of a batch of 2 vs 16 differ by float32 rounding only
    torch.testing.assert_close(z, (prof[:2] - prof.mean(0)) / prof.std(0), rtol=1e-4, atol=1e-5)
    r = ps.rank(x[:2], target=y[:2], k=5)
    assert r.shape == (2, 5) and torch.equal(
        r[0], z[0].sort(descending=True, stable=True).indices[:5]
    )
    summary = ps.group_summary(r)
    assert sum(summary.values()) == pytest.approx(100.0) and len(summary) == 4
    path = tmp_path / "z.pt"
    ps.save_calibration(path)
    other = ParameterSaliency(model)
    other.load_calibration(path)
    assert torch.equal(other.score(x[:2], target=y[:2]), z)
    with pytest.raises(ValueError, match="different"):
        ParameterSaliency(model, layers=[model.fc]).load_calibration(path)
    pot = ps.fit(loader, POTCalibration(level=0.75, min_peaks=2))
    k = 16 - int(0.75 * 16)
    assert torch.equal(pot.threshold, prof.sort(0, descending=True).values[k - 1])
    ranks = ps.rank(x[:3], target=y[:3])
    assert isinstance(ranks, list) and len(ranks) == 3


def test_input_saliency_matches_double_backprop_reference(shapes_model, shapes_batch) -> None:
    model = shapes_model.model
    x, y, _ = shapes_batch
    ps = ParameterSaliency(model)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    cal = ps.fit(loader)
    sal = ps.input_saliency(x[:2], target=y[:2], k=5)
    assert sal.shape == x[:2].shape
    m = _copy(model).eval()
    convs = [mm for mm in m.modules() if isinstance(mm, nn.Conv2d)]
    mean, std = cal.mean.float(), cal.std.float()
    for i in range(2):
        xi = x[i : i + 1].clone().requires_grad_()
        loss = nn.functional.cross_entropy(m(xi), y[i : i + 1])
        grads = torch.autograd.grad(loss, [c.weight for c in convs], create_graph=True)
        prof = torch.cat([g.abs().reshape(g.shape[0], -1).mean(1) for g in grads])[None]
        zz = (prof - mean) / std
        t = zz.detach().clone()
        top = t[0].topk(5).indices
        t[0, top] *= 100
        (g,) = torch.autograd.grad(nn.functional.cosine_similarity(zz, t).sum(), xi)
        torch.testing.assert_close(sal[i], g[0], rtol=1e-4, atol=1e-5 * float(g.abs().max()))


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3)
        self.b = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.a(x).mean((2, 3)) * scale[:, None] + self.b(z)


def test_tuple_inputs_additional_args_and_progress(capsys) -> None:
    torch.manual_seed(0)
    model = _TwoInputs()
    x, z, s = torch.randn(4, 1, 5, 5), torch.randn(4, 4), torch.rand(4)
    y = torch.tensor([0, 1, 2, 0])
    ps = ParameterSaliency(model, layers=[model.a, model.b])
    prof = ps.profiles(
        (x, z), y, additional_forward_args=(s,), internal_batch_size=3, show_progress=True
    )
    assert "ParameterSaliency attribution: 100%" in capsys.readouterr().err
    func = ps.profiles((x, z), y, additional_forward_args=(s,), method="func")
    _close(prof, func)
    m = _copy(model)
    ref = []
    for i in range(4):
        m.zero_grad()
        out = m(x[i : i + 1], z[i : i + 1], s[i : i + 1])
        nn.functional.cross_entropy(out, y[i : i + 1]).backward()
        ref.append(
            torch.cat([m.a.weight.grad.abs().flatten(1).mean(1), m.b.weight.grad.abs().mean(1)])
        )
    _close(prof, torch.stack(ref))


def test_attention_with_separate_qkv_projections() -> None:
    torch.manual_seed(1)
    att = nn.MultiheadAttention(8, 4, kdim=6, vdim=5, batch_first=True)

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att = att
            self.fc = nn.Linear(8, 3)

        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.fc(self.att(q, k, v)[0].mean(1))

    model = M()
    q, k, v = torch.randn(3, 2, 8), torch.randn(3, 4, 6), torch.randn(3, 4, 5)
    y = torch.tensor([2, 0, 1])
    ps = ParameterSaliency(model, layers=model.att)
    assert ps.filters.param[:4] == ["q_proj_weight"] * 4 and len(ps.filters) == 12
    prof = ps.attribute((q, k, v), target=y)
    ref = []
    for i in range(3):
        model.zero_grad()
        out = model(q[i : i + 1], k[i : i + 1], v[i : i + 1])
        nn.functional.cross_entropy(out, y[i : i + 1]).backward()
        ref.append(
            torch.cat(
                [getattr(att, f"{p}_proj_weight").grad.abs().reshape(4, -1).mean(1) for p in "qkv"]
            )
        )
    model.zero_grad(set_to_none=True)
    _close(prof, torch.stack(ref))


def test_noise_tunnel_with_tiny_noise_equals_attribute(shapes_model, shapes_batch) -> None:
    from captum.attr import NoiseTunnel

    model = shapes_model.model
    x, y, _ = shapes_batch
    ps = ParameterSaliency(model, layers=model.features[7])
    plain = ps.attribute(x[:3], target=y[:3])
    with torch.no_grad():  # NoiseTunnel and sensitivity_max call under no_grad
        nt = NoiseTunnel(ps).attribute(x[:3], target=y[:3], nt_samples=2, stdevs=1e-7)
    torch.testing.assert_close(nt, plain, rtol=1e-3, atol=1e-6 * float(plain.abs().max()))
