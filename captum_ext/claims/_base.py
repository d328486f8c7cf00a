"""The pieces every claim experiment shares: its settings, its outcome and the registry.

A claim experiment is a function ``run(settings) -> Outcome`` registered with :func:`claim`. It
runs on the embedded benchmark, computes the paper's quantity with the public API, and returns
the paper's figure, ours, and a verdict reached by a rule the experiment states in words next
to the numbers. :func:`run_claim` times it and adds the claim's identity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CLAIMS",
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "ClaimSettings",
    "Outcome",
    "Verdict",
    "claim",
    "claim_figure",
    "run_claim",
    "verdict_from",
]

Verdict = Literal["holds", "partly", "does not hold"]
#: The three verdicts, strongest first.
VERDICTS: tuple[Verdict, ...] = ("holds", "partly", "does not hold")


@dataclass(frozen=True)
class ClaimSettings:
    """How big an experiment runs and where its figure goes.

    Attributes:
        size: ``"test"`` (a reduced run for the test suite: seconds), ``"default"`` (what
            ``captum-ext claims`` runs: minutes on 2 CPU cores) or ``"full"`` (closer to the
            paper's setting; may take much longer).
        out: Folder for the experiment's figure; ``None`` draws no figure.
        seed: Seed of every random choice the experiment makes (draws, training, attacks).
    """

    size: Literal["test", "default", "full"] = "default"
    out: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size not in ("test", "default", "full"):
            raise ValueError(f"size must be 'test', 'default' or 'full', got {self.size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")

    def pick(self, test: int, default: int, full: int) -> int:
        """The value of a size knob at this setting."""
        return {"test": test, "default": default, "full": full}[self.size]


@dataclass(frozen=True)
class Outcome:
    """What an experiment found.

    Attributes:
        paper_value: The paper's figure, in words with its source (table, figure, theorem).
        ours: Our figure in the same terms.
        verdict: ``"holds"``, ``"partly"`` or ``"does not hold"``.
        rule: The rule that gave the verdict, in words (thresholds written out).
        why: Where the claim does not hold (or only partly): the reason found, or what differs
            from the paper's setting. Empty when it holds.
        numbers: The raw measurements (finite floats, or lists of them) for results files and
            tests.
        figure: File name of the figure, relative to ``ClaimSettings.out`` (``None``: none).
    """

    paper_value: str
    ours: str
    verdict: Verdict
    rule: str
    why: str = ""
    numbers: dict[str, float | list[float]] = field(default_factory=dict)
    figure: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict != "holds" and not self.why:
            raise ValueError("why must say why a claim does not (fully) hold")
        for key, value in self.numbers.items():
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ValueError(f"numbers[{key!r}] must be finite numbers, got {value!r}")


@dataclass(frozen=True)
class Claim:
    """A registered experiment: one paper's claim and the function that tests it."""

    name: str
    paper: str
    statement: str
    run: Callable[[ClaimSettings], Outcome]


@dataclass(frozen=True)
class ClaimResult:
    """A claim with its outcome and the seconds the experiment took."""

    name: str
    paper: str
    statement: str
    outcome: Outcome
    seconds: float

    def as_dict(self) -> dict:
        """A JSON-ready dict (the outcome's fields flattened in)."""
        d = {k: v for k, v in asdict(self).items() if k != "outcome"}
        d.update(asdict(self.outcome))
        return d


#: Every registered claim, by name, in registration order.
CLAIMS: dict[str, Claim] = {}


def claim(name: str, paper: str, statement: str) -> Callable:
    """Register ``run(settings) -> Outcome`` as the experiment of a paper's claim.

    Args:
        name: Short unique key (``captum-ext claims --only NAME``).
        paper: The paper, e.g. ``"LEG (Luo, Barut & Jin, ICCV 2021)"``.
        statement: The claim in one sentence, as the paper makes it.
    """

    def register(run: Callable[[ClaimSettings], Outcome]) -> Callable[[ClaimSettings], Outcome]:
        if name in CLAIMS:
            raise ValueError(f"claim {name!r} is registered twice")
        CLAIMS[name] = Claim(name=name, paper=paper, statement=statement, run=run)
        return run

    return register


def run_claim(name: str, settings: ClaimSettings | None = None) -> ClaimResult:
    """Run one registered claim experiment and time it."""
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; known: {', '.join(CLAIMS)}")
    c = CLAIMS[name]
    start = time.perf_counter()
    outcome = c.run(settings or ClaimSettings())
    if not isinstance(outcome, Outcome):
        raise TypeError(f"claim {name!r} returned {type(outcome).__name__}, not Outcome")
    return ClaimResult(c.name, c.paper, c.statement, outcome, time.perf_counter() - start)


def verdict_from(holds: bool, partly: bool = False) -> Verdict:
    """``"holds"`` if ``holds``, else ``"partly"`` if ``partly``, else ``"does not hold"``."""
    return "holds" if holds else ("partly" if partly else "does not hold")


def names_or_all(names: Iterable[str] | None) -> list[str]:
    """The given claim names checked against the registry, or all of them."""
    if names is None:
        return list(CLAIMS)
    out = list(names)
    unknown = [n for n in out if n not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claim(s) {', '.join(unknown)}; known: {', '.join(CLAIMS)}")
    return out


def claim_figure(
    settings: ClaimSettings,
    name: str,
    draw: Callable[[Any], None],
    figsize: tuple[float, float],
    layout: Literal["constrained", "tight"] | None = None,
) -> str | None:
    """Draw ``draw(figure)`` on a plain matplotlib figure and save it as ``settings.out / name``.

    The one figure writer of the experiments (atomic PNG via the report's ``save_figure``,
    matplotlib imported only here and only when a figure is wanted).

    Returns:
        ``name`` (what :attr:`Outcome.figure` holds), or None, with nothing drawn, when
        ``settings.out`` is None.
    """
    if settings.out is None:
        return None
    from matplotlib.figure import Figure

    from captum_ext.report.plots import save_figure

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=figsize, layout=layout)
    draw(fig)
    save_figure(fig, out / name)
    return name
