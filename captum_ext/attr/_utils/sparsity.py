"""Per-example choice of ``lambda1`` by the sparsity-ratio rule of Singla et al. (2019, Sec. 4.1).

The sparsity ratio ``eta`` of a solution is its fraction of exact zeros over all input entries.
The rule, per example, with sequential semantics (candidates are evaluated in batches, but the
choice is the one a one-value-at-a-time search would make):

1. Solve every value of the grid (one batch).
2. If some solutions have ``eta`` in the window ``[lo, hi)``, keep the one with the highest
   surrogate loss ``Q``; ties go to the smaller ``lambda1``.
3. Otherwise, if no solution is all zero, extend the grid upward by factors of 10 until one is
   (in-window solutions met on the way count as in step 2).
4. Halve the smallest all-zero ``lambda1`` repeatedly until a solution lands in the window, at
   most ``max_halvings`` times. If a halving overshoots below the window, bisect geometrically
   between the two bracketing values (our extension: the paper only says "halve and repeat").
5. If nothing qualifies, return the non-zero solution whose ``eta`` is closest to the window and
   flag ``in_window=False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

#: ``solve(lambda1 (M, K), examples (M,)) -> (delta (M, K, d), q (M, K))`` for the ``M``
#: examples listed (all ``N`` in the first round, only the unresolved ones later).
SolveFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def sparsity_ratio(delta: Tensor) -> Tensor:
    """Fraction of exact zeros along the last dimension."""
    return (delta == 0).to(torch.float64).mean(-1)


@dataclass
class Lambda1Choice:
    """The selected solution of every example.

    Attributes:
        delta: ``(N, d)`` solutions.
        lambda1: ``(N,)`` chosen values.
        eta: ``(N,)`` sparsity ratios.
        q: ``(N,)`` surrogate losses.
        in_window: ``(N,)`` whether ``eta`` lies in the window.
        n_rounds: Batched solves spent.
    """

    delta: Tensor
    lambda1: Tensor
    eta: Tensor
    q: Tensor
    in_window: Tensor
    n_rounds: int


class _State:
    """Sequential search state of one example."""

    def __init__(self, lo: float, hi: float, max_halvings: int) -> None:
        self.lo, self.hi, self.budget = lo, hi, max_halvings
        self.window: list[tuple[float, float, int, int]] = []  # (lam, q, round, col)
        self.fallback: tuple[float, float, int, int] | None = None  # (dist, lam, round, col)
        self.lam_zero = math.inf
        self.lam_max = -math.inf
        self.phase = "grid"
        self.bracket: tuple[float, float] | None = None  # (below-window lam, all-zero lam)
        self.pick: tuple[float, int, int] | None = None  # (lam, round, col)
        self.queue: list[float] = []
        self.up_steps = 0

    def see(self, lam: float, eta: float, q: float, rnd: int, col: int) -> str:
        self.lam_max = max(self.lam_max, lam)
        if self.lo <= eta < self.hi:
            self.window.append((lam, q, rnd, col))
            return "in"
        if eta >= self.hi:
            self.lam_zero = min(self.lam_zero, lam)
            return "zero"
        dist = self.lo - eta
        if self.fallback is None or dist < self.fallback[0]:
            self.fallback = (dist, lam, rnd, col)
        return "below"

    def best_window(self) -> tuple[float, int, int]:
        lam, _, rnd, col = max(self.window, key=lambda w: (w[1], -w[0]))
        return lam, rnd, col

    def propose(self, speculate: int) -> list[float]:
        """Next values to evaluate (empty when done)."""
        if self.pick is not None:
            return []
        if self.phase == "up":
            return [self.lam_max * 10.0**i for i in range(1, speculate + 1)]
        if self.phase == "halve":
            n = min(speculate, self.budget)
            return [self.lam_zero / 2.0**i for i in range(1, n + 1)]
        if self.phase == "bisect" and self.budget > 0 and self.bracket is not None:
            a, b = self.bracket
            return [math.sqrt(a * b)]
        return []

    def advance(self, kind: str, lam: float, rnd: int, col: int, max_up: int) -> bool:
        """Update the phase after :meth:`see` classed ``lam`` as ``kind``; True ends the round."""
        if self.phase == "up":
            self.up_steps += 1
            if kind == "zero":
                if self.window:
                    self.pick = self.best_window()
                else:
                    self.phase = "halve"
                return True
            if self.up_steps >= max_up:
                self.phase = "done"
                return True
        elif self.phase == "halve":
            self.budget -= 1
            if kind == "in":
                self.pick = (lam, rnd, col)
                return True
            if kind == "below":
                self.phase = "bisect"
                self.bracket = (lam, lam * 2.0)
                return True
            if self.budget <= 0:
                self.phase = "done"
                return True
        elif self.phase == "bisect" and self.bracket is not None:
            self.budget -= 1
            if kind == "in":
                self.pick = (lam, rnd, col)
            elif kind == "zero":
                self.bracket = (self.bracket[0], lam)
            else:
                self.bracket = (lam, self.bracket[1])
            if self.budget <= 0 and self.pick is None:
                self.phase = "done"
        return False

    def after_grid(self) -> None:
        if self.window:
            self.pick = self.best_window()
        elif math.isinf(self.lam_zero):
            self.phase = "up" if self.lam_max > 0 else "halve_from_one"
        else:
            self.phase = "halve"
        if self.phase == "halve_from_one":  # grid of zeros only: start the upward search at 1
            self.lam_max = 1e-5
            self.phase = "up"


def select_lambda1(
    solve: SolveFn,
    grid: Sequence[float],
    n_examples: int,
    window: tuple[float, float],
    max_halvings: int = 20,
    max_up: int = 12,
    speculate: int = 4,
    device: torch.device | None = None,
) -> Lambda1Choice:
    """Run the sparsity-ratio rule (module docstring) for every example.

    Args:
        solve: Batched solver, see :data:`SolveFn`. Every column is an independent problem.
        grid: The initial ``lambda1`` values.
        n_examples: ``N``.
        window: ``(lo, hi)``: ``lo <= eta < hi`` qualifies.
        max_halvings: Halving plus bisection steps per example.
        max_up: Upward (x10) steps per example.
        speculate: Values evaluated per batched round in the upward and halving phases.
        device: Device of the returned ``lambda1``/``eta``.

    Returns:
        A :class:`Lambda1Choice`.
    """
    lo, hi = window
    states = [_State(lo, hi, max_halvings) for _ in range(n_examples)]
    results: list[_Round] = []
    rnd = _run_round(solve, [list(grid) for _ in states], results, pad_last=False)
    q_l, eta_l = results[rnd][2].tolist(), results[rnd][3].tolist()
    for i, st in enumerate(states):
        for col, lam in enumerate(grid):
            st.see(float(lam), eta_l[i][col], q_l[i][col], rnd, col)
        st.after_grid()
    while True:
        proposals = [st.propose(speculate) for st in states]
        if not any(proposals):
            break
        rnd = _run_round(solve, proposals, results, pad_last=False)
        rows = results[rnd][0]
        q_l, eta_l = results[rnd][2].tolist(), results[rnd][3].tolist()
        for i, (st, vals) in enumerate(zip(states, proposals)):
            for col, lam in enumerate(vals):
                kind = st.see(lam, eta_l[rows[i]][col], q_l[rows[i]][col], rnd, col)
                if st.advance(kind, lam, rnd, col, max_up):
                    break
    return _selected(states, results, len(grid), device)


def select_lambda1_max_solves(max_halvings: int = 20, max_up: int = 12, speculate: int = 4) -> int:
    """The most batched solves :func:`select_lambda1` makes with these arguments.

    The grid round, then per example at most ``ceil(max_up / speculate)`` upward rounds (each
    takes ``speculate`` steps until an all-zero solution or ``max_up`` steps) and
    ``max_halvings`` halving or bisection rounds (each spends at least one of the example's
    ``max_halvings`` steps). An example that proposes nothing stays done, so the examples still
    searching in a round are a subset of those of the round before: the batched rounds are at
    most one example's.
    """
    return 1 + math.ceil(max_up / speculate) + max_halvings


#: One batched round: example -> row, then the round's ``delta``, ``q`` and ``eta``.
_Round = tuple[dict[int, int], Tensor, Tensor, Tensor]


def _run_round(
    solve: SolveFn, values: list[list[float]], results: list[_Round], pad_last: bool
) -> int:
    """Solve the non-empty rows of ``values`` as one batch, append the round, return its index.

    Shorter rows are padded to the widest one with their first value (their last one with
    ``pad_last``); the padded columns are solved but never read.
    """
    active = [i for i, v in enumerate(values) if v]
    width = max(len(values[i]) for i in active)
    padded = [(values[i] + [values[i][-1 if pad_last else 0]] * width)[:width] for i in active]
    lam = torch.tensor(padded, dtype=torch.float64)
    delta, q = solve(lam, torch.tensor(active, dtype=torch.long))
    results.append(({i: r for r, i in enumerate(active)}, delta, q, sparsity_ratio(delta)))
    return len(results) - 1


def _selected(
    states: list[_State], results: list[_Round], grid_len: int, device: torch.device | None
) -> Lambda1Choice:
    """The choice of :func:`select_lambda1`: each example's pick, else its fallback."""
    ref = results[0][1]
    delta = ref.new_zeros(len(states), ref.shape[-1])
    lam_out, eta_out, q_out, ok = [], [], [], []
    for i, st in enumerate(states):
        if st.pick is not None:
            lam, r, col = st.pick
            inside = True
        elif st.fallback is not None:
            _, lam, r, col = st.fallback
            inside = False
        else:  # every solution was zero (e.g. a zero gradient)
            lam, r, col, inside = st.lam_zero, 0, grid_len - 1, False
        row = results[r][0][i]
        delta[i] = results[r][1][row, col]
        lam_out.append(lam)
        eta_out.append(float(results[r][3][row, col]))
        q_out.append(float(results[r][2][row, col]))
        ok.append(inside)
    return Lambda1Choice(
        delta=delta,
        lambda1=torch.tensor(lam_out, dtype=torch.float64, device=device),
        eta=torch.tensor(eta_out, dtype=torch.float64, device=device),
        q=torch.tensor(q_out, dtype=torch.float64, device=device),
        in_window=torch.tensor(ok, dtype=torch.bool, device=device),
        n_rounds=len(results),
    )


def quantile_lambda1(g: Tensor, level: float) -> Tensor:
    """The smallest ``lambda1`` with ``fraction(|g| <= lambda1) >= level``, per row of ``g``.

    For CAFO this is exact: ``S_lambda1(g)`` has sparsity ratio ``eta(lambda1) = fraction(|g| <=
    lambda1)``, so the returned value is the smallest ``lambda1`` whose solution reaches ``eta >=
    level`` (ties in ``|g|`` can push ``eta`` above ``level``).

    Args:
        g: ``(N, d)`` gradients.
        level: In ``[0, 1]``.

    Returns:
        ``(N,)`` float64 values (0 for ``level == 0``).
    """
    d = g.shape[-1]
    k = math.ceil(level * d - 1e-9)
    if k <= 0:
        return torch.zeros(g.shape[0], dtype=torch.float64)
    return torch.kthvalue(g.abs().double().cpu(), min(k, d), dim=-1).values


def refine_lambda1(
    solve: SolveFn,
    seeds: Tensor,
    window: tuple[float, float],
    band: float,
    max_rounds: int = 20,
    width: int = 1,
    upper: float = 1.0,
) -> Lambda1Choice:
    """The refined sparsity-ratio rule: an in-window solution just above the window's lower edge.

    Singla et al. (2019, Sec. 4.1) keep, among solutions whose sparsity ratio lies in the window
    ``[lo, hi)``, the one with the highest surrogate loss ``Q``. ``Q`` falls as ``lambda1`` grows
    (for CAFO ``Q = sum (|g| - lambda1)_+ |g| / (2 lambda2)`` strictly), so on a continuous
    sweep that solution sits at the window's lower edge, which the paper's factor-10/halving
    grid usually jumps over (its pick often has ``eta`` near 1: a few pixels). Here, per
    example, the search looks for a solution in the band ``lo <= eta < min(lo + band, hi)``:
    the first round evaluates ``seeds``; each later round proposes ``width`` values from a
    safeguarded secant model of ``eta(lambda1)`` (:func:`_narrowed`) inside the bracket ``[a,
    b]`` of the solutions met (``eta(a) < lo <= eta(b)``; ``b = upper`` until a solution above
    the band is met), so the bracket shrinks every round. Among the band's solutions met (else
    among all in-window ones) the one with the highest ``Q`` is returned. ``upper`` is a value
    known to give an all-zero solution (``lambda1 >= max |g|`` does, for CAFO and CASO alike).

    Each round costs one solve per value and example, and for CASO a solve is ``n_iter``
    Hessian-vector products: hence one value per round by default and a secant model rather
    than an even grid (which took 9 values, then 8 per round, to the same band).

    Args:
        solve: Batched solver, see :data:`SolveFn`.
        seeds: ``(N, S)`` first-round values per example (e.g. the CAFO quantile).
        window: ``(lo, hi)``.
        band: Width of the target band above ``lo``.
        max_rounds: Refinement rounds after the first one.
        width: Values per example and refinement round (spread over the band's targets).
        upper: A ``lambda1`` with an all-zero solution.

    Returns:
        A :class:`Lambda1Choice`; ``in_window`` is False where no solution met lies in the
        window (then the non-zero solution closest to it below is returned).
    """
    lo, hi = window
    top = min(lo + band, hi)
    n = seeds.shape[0]
    first = [sorted({min(max(float(v), 0.0), upper) for v in row}) for row in seeds.tolist()]
    seen: list[list[_Seen]] = [[] for _ in range(n)]
    results: list[_Round] = []

    def run(values: list[list[float]]) -> None:
        rnd = _run_round(solve, values, results, pad_last=True)
        rows, _, q, eta = results[rnd]
        q_l, eta_l = q.tolist(), eta.tolist()
        for i, r in rows.items():
            for col, lam in enumerate(values[i]):
                seen[i].append((lam, eta_l[r][col], q_l[r][col], rnd, col))

    run(first)
    for _ in range(max_rounds):
        proposals = [_narrowed(seen[i], lo, top, upper, width) for i in range(n)]
        if not any(proposals):
            break
        run(proposals)
    return _refined(seen, results, lo, hi, top)


def refine_lambda1_max_solves(max_rounds: int = 20) -> int:
    """The most batched solves :func:`refine_lambda1` makes: the first round and ``max_rounds``."""
    return 1 + max_rounds


#: One solution met by :func:`refine_lambda1`: ``(lambda1, eta, q, round, column)``.
_Seen = tuple[float, float, float, int, int]

#: Fraction of the bracket kept clear at each end by a proposal (so the bracket shrinks).
_SAFEGUARD = 0.05

#: Most a proposal moves past the only side of the band met so far (factor on ``lambda1``).
_MAX_STEP = 2.0


def _narrowed(seen: list[_Seen], lo: float, top: float, upper: float, width: int) -> list[float]:
    """The next ``width`` values of one example (empty when it is done).

    The bracket is ``a`` (the largest ``lambda1`` met below the window, else 0) and ``b`` (the
    smallest met at or above it, which is above the band, else ``upper``). The targets are
    ``width`` sparsity ratios spread over the band; each is mapped to ``lambda1`` by the line
    through two solutions met: ``a`` and ``b`` when both were met (regula falsi), else the two
    nearest ones on the side met, with ``(0, 0)`` as a point of the model (not of the bracket)
    when only one is known. A proposal stays inside the bracket, ``_SAFEGUARD`` of its width
    from either end, and at most a factor ``_MAX_STEP`` past the side met; where the model is
    flat or points the wrong way, it halves (or doubles) instead.
    """
    if any(lo <= e < top for _, e, _, _, _ in seen):
        return []
    pts = sorted({(lam, e) for lam, e, _, _, _ in seen})
    above = [p for p in pts if p[1] >= lo]
    b = min(above) if above else (upper, 1.0)
    below = [p for p in pts if p[1] < lo and p[0] < b[0]]
    a = max(below) if below else (0.0, 0.0)
    if b[0] - a[0] <= 1e-9 * max(b[0], 1e-300):
        return []
    if below and above:
        p, q = a, b
        floor, ceil = a[0], b[0]
    elif below:  # only solutions below the window: extrapolate upward
        p, q = ([(0.0, 0.0)] + below)[-2:]
        floor, ceil = a[0], min(b[0], _MAX_STEP * a[0]) if a[0] > 0 else b[0]
    else:  # only solutions above the band: extrapolate downward
        p, q = b, (above[1] if len(above) > 1 else b)
        p = (0.0, 0.0) if p == q else p
        floor, ceil = b[0] / _MAX_STEP, b[0]
    margin = _SAFEGUARD * (ceil - floor)
    slope = (q[1] - p[1]) / (q[0] - p[0]) if q[0] != p[0] else 0.0
    out = []
    for k in range(width):
        target = lo + (top - lo) * (k + 1) / (width + 1)
        lam = p[0] + (target - p[1]) / slope if slope > 0 else 0.5 * (floor + ceil)
        out.append(min(max(lam, floor + margin), ceil - margin))
    return sorted(set(out))


def _refined(
    seen: list[list[_Seen]], results: list[_Round], lo: float, hi: float, top: float
) -> Lambda1Choice:
    """The choice of :func:`refine_lambda1`: the highest-loss in-band (else in-window) solution."""
    ref = results[0][1]
    n = len(seen)
    delta = ref.new_zeros(n, ref.shape[-1])
    lam_out, eta_out, q_out, ok = [], [], [], []
    for i in range(n):
        band_hits = [s for s in seen[i] if lo <= s[1] < top]
        inside = band_hits or [s for s in seen[i] if lo <= s[1] < hi]
        if inside:
            lam, eta, q, r, col = max(inside, key=lambda s: (s[2], -s[0]))
        else:
            nonzero = [s for s in seen[i] if s[1] < 1.0] or seen[i]
            lam, eta, q, r, col = min(nonzero, key=lambda s: (abs(s[1] - lo), s[0]))
        delta[i] = results[r][1][results[r][0][i], col]
        lam_out.append(lam)
        eta_out.append(eta)
        q_out.append(q)
        ok.append(bool(inside))
    return Lambda1Choice(
        delta=delta,
        lambda1=torch.tensor(lam_out, dtype=torch.float64),
        eta=torch.tensor(eta_out, dtype=torch.float64),
        q=torch.tensor(q_out, dtype=torch.float64),
        in_window=torch.tensor(ok, dtype=torch.bool),
        n_rounds=len(results),
    )
