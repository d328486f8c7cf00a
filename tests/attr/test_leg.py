"""LEG and LEG-TV: recovery of known linear models, the paper's limits, the Captum contract."""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import infidelity

from captum_ext.attr import LEG, LEGTV, leg_saliency_map
from captum_ext.attr._utils.map_checks import DegenerateAttributionWarning

H = 16
GRID = (8, 8)
#: Per-channel estimates (the authors' scheme): the formula tests recover per-channel weights.
IND = {"channels": "independent"}


def block_weights(channels: int = 2) -> torch.Tensor:
    """Weights constant on the 2 x 2 pixel cells of an 8 x 8 grid over 16 x 16 inputs."""
    w = torch.zeros(1, channels, H, H)
    w[:, 0, 2:8, 2:8] = 1.0
    if channels > 1:
        w[:, 1, 8:14, 6:12] = -0.5
    return w


def linear(w: torch.Tensor):
    return lambda x: (x * w).flatten(1).sum(1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tv(a: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of maps over their last two dims."""
    return (a[..., 1:, :] - a[..., :-1, :]).abs().sum() + (a[..., 1:] - a[..., :-1]).abs().sum()


def rel_err(a: torch.Tensor, w: torch.Tensor) -> float:
    return ((a - w).norm() / (w.expand_as(a)).norm()).item()


def shared_estimand(w: torch.Tensor, cell: int = 2) -> torch.Tensor:
    """What shared-channel LEG estimates for a gradient ``w``: per pixel, its mean over the
    channels and the pixels of its (``cell`` x ``cell``) grid cell."""
    m = torch.nn.functional.avg_pool2d(w.mean(1, keepdim=True), cell)
    return torch.nn.functional.interpolate(m, scale_factor=cell, mode="nearest").expand_as(w)


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 2, H, H, generator=gen(42))


def quadratic_around(x0: torch.Tensor, w: torch.Tensor, u: torch.Tensor, c: float = 20.0):
    """``f(x) = w.x + c (u.(x - x0))^2`` per example (rows of a LEG batch map to ``r % N``).

    Under any centred Gaussian ``z`` the odd moments vanish, so LEG's population value
    (Lemma 1) is exactly ``w`` while the quadratic term acts as noise on the regression: the
    estimate must converge to ``w`` at the rate ``n^-1/2``.
    """

    def f(inp: torch.Tensor) -> torch.Tensor:
        ref = x0.repeat(inp.shape[0] // x0.shape[0], 1, 1, 1)
        return (inp * w).flatten(1).sum(1) + c * ((inp - ref) * u).flatten(1).sum(1) ** 2

    return f


def test_least_squares_recovers_a_linear_model_exactly(x):
    # Lemma 1's gamma is the least-squares slope: for a linear model any draws give it exactly
    w = block_weights()
    for cov in ("isotropic", "tv"):
        for s in range(2):
            a = LEG(linear(w)).attribute(x, grid=GRID, covariance=cov, generator=gen(s), **IND)
            assert rel_err(a, w) < 1e-5


def test_shared_draws_estimate_each_cells_channel_summed_gradient(x):
    # one draw per cell added to all its channels: f(x0 + z) - f(x0) = sum_cell z_cell W_cell
    # with W_cell the sum of w over the cell's pixels and channels, so least squares gives
    # W_cell exactly; the output spreads it evenly, so every pixel holds the cell's mean of w
    w = block_weights()
    w[:, 1, 3, 3] = 2.0  # a cell whose channels and pixels differ
    for cov in ("isotropic", "tv"):
        a = LEG(linear(w)).attribute(x, grid=GRID, covariance=cov, generator=gen(1))
        assert rel_err(a, shared_estimand(w)) < 1e-5
        assert torch.equal(a[:, 0], a[:, 1])  # the same value in every channel


def test_antithetic_pairs_cancel_the_even_order_terms_exactly(x):
    # f = w.x + c (u.(x - x0))^2: with +z, -z pairs the quadratic term is the same for both
    # draws of a pair, so it is absorbed by the intercept and least squares is exact
    w = block_weights()
    u = torch.randn(1, 2, H, H, generator=gen(7)) / H
    f = quadratic_around(x, w, u)
    a = LEG(f).attribute(x, n_samples=300, grid=GRID, generator=gen(2))
    assert rel_err(a, shared_estimand(w)) < 1e-4
    iid = LEG(f).attribute(x, n_samples=300, grid=GRID, antithetic=False, generator=gen(2))
    assert rel_err(iid, shared_estimand(w)) > 0.1  # without pairs the term is noise


def test_moment_estimator_falls_at_the_statistical_rate(x):
    # Eq. 3 carries the sample-covariance error Sigma^-1 (Z^T Z / n - Sigma) w: ~ sqrt(P / n)
    w = block_weights()
    f = linear(w)
    err = {
        n: sum(
            rel_err(
                LEG(f).attribute(
                    x,
                    n_samples=n,
                    grid=GRID,
                    covariance="tv",
                    estimator="moment",
                    antithetic=False,
                    generator=gen(s),
                    **IND,
                ),
                w,
            )
            for s in range(3)
        )
        / 3
        for n in (300, 3000)
    }
    assert err[3000] < 0.45
    assert 2.2 < err[300] / err[3000] < 4.5


def test_default_leg_error_falls_like_root_n_on_a_nonlinear_function(x):
    # f = w.x + c (u.d)(v.d)(t.d), d = x - x0, with u, v, t on disjoint grid cells: the
    # gradient at x0 is w, and the odd (third-order) term survives antithetic pairs but has no
    # linear projection (E[z (u.z)(v.z)(t.z)] = 0 for independent cell draws), so the
    # estimand is the cell mean of w and the error vs it is pure noise, ~ n^-1/2. Defaults
    # (shared channels, antithetic pairs, sigma, least squares) but a fixed grid, so that the
    # estimand does not change with n.
    w = block_weights()
    g = torch.randn(3, 2, H, H, generator=gen(7))
    support = torch.zeros(3, 1, H, H)
    support[0, :, :8, :8] = support[1, :, :8, 8:] = support[2, :, 8:, :] = 1
    u, v, t = (g * support).split(1)

    def f(inp):
        d = inp - x.repeat(inp.shape[0] // x.shape[0], 1, 1, 1)
        return (inp * w).flatten(1).sum(1) + (d * u).flatten(1).sum(1) * (d * v).flatten(1).sum(
            1
        ) * (d * t).flatten(1).sum(1)

    truth = shared_estimand(w)
    err = {
        n: sum(
            rel_err(LEG(f).attribute(x, n_samples=n, grid=GRID, generator=gen(s)), truth)
            for s in range(4)
        )
        / 4
        for n in (500, 2000, 8000)
    }
    # 4x more draws: error / 2 (the exponent -1/2 within about +-0.15)
    for a, b in ((500, 2000), (2000, 8000)):
        assert 1.6 < err[a] / err[b] < 2.5, err
    assert err[8000] < 0.2


def test_legtv_beats_leg_at_equal_n(x):
    # the paper's claim: with piecewise-constant gamma the TV penalty needs fewer samples. It is
    # a claim about the noise-dominated regime: K_L = 0.1 shrinks the map by a fixed share (about
    # 10 % here, whatever n), so once least squares is accurate (n >> P) plain LEG is closer.
    # Mean error over 4 draws: the moment estimator on a linear model (n = 400, P = 128) and
    # least squares on a non-linear one (n = 200, 1.6 draws per coefficient).
    w = block_weights()
    u = torch.randn(1, 2, H, H, generator=gen(7)) / H
    for f, kw in (
        (linear(w), {"estimator": "moment", "n_samples": 400}),
        (quadratic_around(x, w, u), {"estimator": "ols", "n_samples": 200}),
    ):
        # the paper's regime: independent draws per channel and no antithetic pairs (which
        # would make least squares exact on the quadratic model)
        common = {"grid": GRID, "covariance": "tv", "antithetic": False, **IND, **kw}
        leg = sum(rel_err(LEG(f).attribute(x, generator=gen(s), **common), w) for s in range(4))
        tv = sum(rel_err(LEGTV(f).attribute(x, generator=gen(s), **common), w) for s in range(4))
        assert tv < 0.85 * leg


@pytest.mark.parametrize("boundary", ["padded", "none"])
def test_legtv_limits(x, boundary):
    f = linear(block_weights())
    kw = {"n_samples": 200, "grid": GRID, "boundary": boundary, "covariance": "tv"}
    leg = LEG(f).attribute(x, generator=gen(), **kw)
    # Lemma 3: L = 0 gives empirical LEG (the mean rule removes the shift of the paper's D)
    at0 = LEGTV(f).attribute(x, K_L=0.0, generator=gen(), **kw)
    torch.testing.assert_close(at0, leg, atol=1e-4 * leg.abs().max().item(), rtol=0)
    at1 = LEGTV(f).attribute(x, K_L=1.0, generator=gen(), **kw)
    if boundary == "padded":
        assert torch.all(at1 == 0)
    else:  # zero TV: constant per channel, at the mean of LEG
        flat = at1.flatten(2)
        torch.testing.assert_close(flat, flat[..., :1].expand_as(flat))
        torch.testing.assert_close(flat.mean(-1), leg.flatten(2).mean(-1), rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("ignore:sigma=0.5")  # a large sigma, so that Theorem 1's L binds
def test_theory_L_is_theorem_1(x):
    from captum_ext.attr._utils.tv_lp import theoretical_L

    f = linear(block_weights())
    kw = {"n_samples": 200, "grid": GRID, "sigma": 0.5}
    theory = LEGTV(f).attribute(x, L="theory", generator=gen(), **kw)
    # the default boundary of isotropic draws is the paper's D
    explicit = LEGTV(f).attribute(x, L=theoretical_L(GRID, 200, "none"), generator=gen(), **kw)
    torch.testing.assert_close(theory, explicit)
    assert theory.abs().max() > 0


def test_constant_model_gives_exact_zeros(x):
    f = lambda inp: torch.full((inp.shape[0],), 0.3)  # noqa: E731
    for cls in (LEGTV, LEG):
        with pytest.warns(DegenerateAttributionWarning, match="blank attributions"):
            assert torch.all(cls(f).attribute(x, n_samples=200, grid=GRID) == 0)


def test_sanity_check_on_trained_cnn(shapes_model, shapes_batch):
    images, labels = shapes_batch[0][:4], shapes_batch[1][:4]
    model = shapes_model.model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    legtv = LEGTV(lambda inp: torch.softmax(model(inp), 1))
    kw = {"n_samples": 400, "grid": (8, 8), "perturbations_per_eval": 100}
    attr = legtv.attribute(images, target=labels, generator=gen(), **kw)
    assert attr.shape == images.shape and attr.abs().sum() > 0
    # randomising the logits layer: output no longer depends on the input -> exactly zero
    rand = copy.deepcopy(model)
    with torch.no_grad():
        rand.fc.weight.zero_()
    with pytest.warns(DegenerateAttributionWarning):
        zero = LEGTV(lambda inp: torch.softmax(rand(inp), 1)).attribute(
            images, target=labels, generator=gen(), **kw
        )
    assert torch.all(zero == 0)
    for k, v in model.state_dict().items():  # no side effects on the model
        assert torch.equal(v, state[k])


def test_leg_tends_to_the_gradient_as_sigma_shrinks(shapes_model, shapes_batch):
    # Section 2: as F shrinks to a point mass, LEG -> grad f. Per pixel, LEG holds the mean of
    # the gradient over each cell, so compare cell means of the (autograd) gradient.
    images, labels = shapes_batch[0][:2], shapes_batch[1][:2]
    model = shapes_model.model.eval()

    def prob(inp):
        return torch.softmax(model(inp), 1)

    inp = images.clone().requires_grad_(True)
    grad = torch.autograd.grad(prob(inp)[torch.arange(2), labels].sum(), inp)[0]
    leg = LEG(prob).attribute(
        images,
        target=labels,
        n_samples=4000,
        grid=GRID,
        sigma=0.002,
        perturbations_per_eval=500,
        generator=gen(),
    )
    # 32 x 32 inputs on an 8 x 8 grid: 4 x 4 cells; shared draws estimate the channel sum
    pool = torch.nn.functional.avg_pool2d
    for i in range(2):
        g = pool(grad[i].sum(0, keepdim=True), 4).flatten()
        a = pool(leg[i].sum(0, keepdim=True), 4).flatten()
        assert torch.corrcoef(torch.stack([g, a]))[0, 1] > 0.8
        assert 0.7 < a.norm() / g.norm() < 1.4


def test_tuple_inputs_share_evaluations_and_additional_args():
    w1 = block_weights(2)
    w2 = torch.zeros(1, 1, H, H)
    w2[..., 4:12, 0:8] = 0.25  # constant on the 4 x 4-pixel cells of a 4 x 4 grid
    x1 = torch.rand(3, 2, H, H, generator=gen(1))
    x2 = torch.rand(3, 1, H, H, generator=gen(2))

    def f(a, b, scale):
        return scale * ((a * w1).flatten(1).sum(1) + (b * w2).flatten(1).sum(1))

    out = LEG(f).attribute(
        (x1, x2),
        additional_forward_args=(2.0,),
        n_samples=2000,
        grid=[GRID, (4, 4)],
        generator=gen(),
        **IND,
    )
    assert isinstance(out, tuple) and out[0].shape == x1.shape and out[1].shape == x2.shape
    assert rel_err(out[0], 2 * w1) < 0.6
    assert rel_err(out[1], 2 * w2) < 0.6
    # same-shaped tensors get independent draws: a tensor the model ignores gets only noise
    both = LEG(lambda a, b: (a * w1).flatten(1).sum(1)).attribute(
        (x1, x1.clone()), n_samples=2000, grid=GRID, generator=gen(), **IND
    )
    assert both[1].norm() < 0.6 * both[0].norm()
    tv = LEGTV(f).attribute((x1, x2), additional_forward_args=(2.0,), n_samples=256, grid=GRID)
    assert isinstance(tv, tuple) and tv[1].shape == x2.shape


def test_targets_and_batch_independence():
    w = torch.cat([block_weights(2), -block_weights(2).flip(-1)])  # two outputs

    def f(inp):
        return torch.einsum("nchw,kchw->nk", inp, w)

    xb = torch.rand(8, 2, H, H, generator=gen(5))
    targets = [0, 1, 1, 0, 1, 0, 0, 1]
    kw = {"n_samples": 192, "grid": GRID, "perturbations_per_eval": 48}
    as_list = LEGTV(f).attribute(xb, target=targets, generator=gen(), **kw)
    as_tensor = LEGTV(f).attribute(xb, target=torch.tensor(targets), generator=gen(), **kw)
    torch.testing.assert_close(as_list, as_tensor)
    # each example's attribution equals a batch-of-1 run with an int target
    for i in (0, 5):
        one = LEGTV(f).attribute(xb[i : i + 1], target=targets[i], generator=gen(), **kw)
        torch.testing.assert_close(one[0], as_list[i], atol=1e-6, rtol=1e-5)


def test_determinism_batch_knob_and_no_global_rng_use(x):
    f = linear(block_weights())
    kw = {"n_samples": 50, "grid": GRID, "estimator": "moment"}
    a = LEG(f).attribute(x, perturbations_per_eval=7, generator=gen(3), **kw)
    b = LEG(f).attribute(x, perturbations_per_eval=50, generator=gen(3), **kw)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # without a generator every call draws afresh (so a sanity check compares models, not
    # draws), and the global RNG is never used
    state = torch.get_rng_state()
    c = LEG(f).attribute(x, **kw)
    d = LEG(f).attribute(x, **kw)
    assert not torch.equal(c, d) and torch.equal(torch.get_rng_state(), state)
    iid = LEG(f).attribute(x, antithetic=False, generator=gen(3), **kw)
    assert iid.shape == x.shape and not torch.equal(iid, a)


def test_solution_path_reuses_evaluations(x):
    f = linear(block_weights())
    # padded: K_L = 1 is the zero map (the paper's D gives the constant mean(LEG) instead)
    kw = {"n_samples": 200, "grid": GRID, "boundary": "padded"}
    path = LEGTV(f).solution_path(x, K_L=(1.0, 0.1, 0.0), generator=gen(), **kw)
    assert len(path) == 3 and torch.all(path[0] == 0)
    single = LEGTV(f).attribute(x, K_L=0.1, generator=gen(), **kw)
    assert tv(path[1]).item() == pytest.approx(tv(single).item(), rel=1e-4)
    torch.testing.assert_close(
        path[2],
        LEG(f).attribute(x, generator=gen(), **kw),
        atol=1e-4 * path[2].abs().max().item(),
        rtol=0,
    )


def test_captum_contract(x):
    f = linear(block_weights())
    leg, legtv = LEG(f), LEGTV(f)
    assert not leg.multiplies_by_inputs and not legtv.multiplies_by_inputs
    assert not leg.has_convergence_delta()
    assert leg.get_name() == "LEG" and legtv.get_name() == "LEG-TV"
    with pytest.raises(NotImplementedError):
        legtv.attribute_future(x)
    # NoiseTunnel: least squares recovers a linear model exactly whatever the draws and x0, so
    # the smoothed map equals the plain one
    nt = NoiseTunnel(leg).attribute(
        x, nt_type="smoothgrad", nt_samples=3, stdevs=0.05, n_samples=200, grid=GRID
    )
    torch.testing.assert_close(nt, leg.attribute(x, n_samples=200, grid=GRID), rtol=1e-4, atol=1e-5)
    # infidelity with a perturbation whose response LEG models exactly: LEG beats a zero map
    attr = leg.attribute(x, n_samples=2000, grid=GRID, generator=gen())

    def perturb(inp):
        # one value per cell, shared by the channels, like LEG's default draws
        noise = torch.nn.functional.interpolate(
            0.05 * torch.randn(inp.shape[0], 1, *GRID), size=(H, H), mode="nearest"
        ).expand_as(inp)
        return noise, inp - noise

    torch.manual_seed(0)
    inf_leg = infidelity(f, perturb, x, attr, n_perturb_samples=20)
    torch.manual_seed(0)
    inf_zero = infidelity(f, perturb, x, torch.zeros_like(attr), n_perturb_samples=20)
    assert inf_leg.shape == (2,) and torch.all(inf_leg < 0.2 * inf_zero)


def test_saliency_map_reduces_abs_over_channels():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    torch.testing.assert_close(leg_saliency_map(a), torch.tensor([[[4.0, 2.5]]]))
    torch.testing.assert_close(leg_saliency_map(a, "mean"), torch.tensor([[[2.0, 1.25]]]))
    with pytest.raises(ValueError, match="reduction"):
        leg_saliency_map(a, "max")


def test_show_progress(x, capsys):
    LEG(linear(block_weights())).attribute(
        x, n_samples=8, grid=(1, 1), perturbations_per_eval=4, show_progress=True
    )
    assert "LEG attribution" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 1}, "n_samples"),
        ({"sigma": 0.0}, "sigma"),
        ({"grid": (32, 8)}, "larger than"),
        ({"K_L": 1.5}, "K_L"),
        ({"solver": "gurobi"}, "solver"),
        ({"L": -1.0}, "L must"),
        ({"covariance": "full"}, "covariance"),
        ({"perturbations_per_eval": 0}, "perturbations_per_eval"),
        ({"antithetic": True, "n_samples": 5}, "even"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
        ({"sigma": -0.1}, "sigma"),
        ({"estimator": "gls"}, "estimator"),
        ({"grid": (8, 8), "n_samples": 64}, "n_samples >= 66"),
        ({"grid": (8, 8), "n_samples": 128, "channels": "independent"}, "n_samples >= 130"),
        ({"channels": "rgb"}, "channels"),
    ],
)
def test_bad_arguments(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LEGTV(linear(block_weights())).attribute(x, **{"n_samples": 10, **kwargs})


def test_bad_inputs_and_outputs(x):
    f = linear(block_weights())
    with pytest.raises(ValueError, match="at least 3-D"):
        LEG(lambda a: a.sum(1)).attribute(torch.rand(4, 16), n_samples=4)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        LEG(f).attribute(bad, n_samples=4)
    with pytest.raises(ValueError, match="non-finite"):
        LEG(lambda a: f(a) / 0.0).attribute(x, n_samples=4)
    with pytest.raises(ValueError, match="target=None needs one output value per example"):
        LEG(lambda a: a.flatten(1)[:, :3]).attribute(x, n_samples=4)
    with pytest.warns(UserWarning, match="per-pixel perturbation std"):
        LEG(f).attribute(x, n_samples=4, sigma=0.3)


def test_antithetic_least_squares_needs_two_draws_per_coefficient(x):
    # a pair +z, -z spans one direction, so n / 2 pairs must reach the 64 slopes of the 8 x 8
    # grid; below that the fit was silently garbage (relative error ~1e14 on small_cnn)
    f = linear(block_weights())
    with pytest.raises(ValueError, match="n_samples >= 128"):
        LEG(f).attribute(x, n_samples=126, grid=GRID, generator=gen())
    # at the bound every slope is determined: exact on a linear function, like plain draws
    a = LEG(f).attribute(x, n_samples=128, grid=GRID, generator=gen())
    b = LEG(f).attribute(x, n_samples=200, grid=GRID, antithetic=False, generator=gen())
    torch.testing.assert_close(a, b, atol=1e-4 * b.abs().max().item(), rtol=0)
