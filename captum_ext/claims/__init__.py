"""Each paper's central claim as an experiment run on the embedded benchmark.

One module per paper (:mod:`~captum_ext.claims.leg`, :mod:`~captum_ext.claims.caso`,
:mod:`~captum_ext.claims.relex`, :mod:`~captum_ext.claims.evt`,
:mod:`~captum_ext.claims.parameter_saliency`,
:mod:`~captum_ext.claims.pilcro`); each experiment is a function registered with
:func:`claim` that returns an :class:`Outcome`: the paper's figure, ours, a verdict and the rule
that gave it, and, where the claim does not hold, the reason found. ``captum-ext claims --out
DIR`` runs them all and writes ``DIR/index.html`` and ``DIR/claims.json``.

Examples:
    >>> from captum_ext.claims import ClaimSettings, run_claim
    >>> result = run_claim("leg_consistency", ClaimSettings(size="test"))
    >>> result.outcome.verdict
    'holds'
"""

import importlib

from captum_ext.claims._base import (
    CLAIMS,
    VERDICTS,
    Claim,
    ClaimResult,
    ClaimSettings,
    Outcome,
    Verdict,
    claim,
    names_or_all,
    run_claim,
    verdict_from,
)

#: The experiment modules; importing one registers its claims (the page keeps this order).
EXPERIMENT_MODULES = ("leg", "caso", "relex", "evt", "parameter_saliency", "pilcro")
for _module in EXPERIMENT_MODULES:
    importlib.import_module(f"captum_ext.claims.{_module}")

__all__ = [
    "CLAIMS",
    "EXPERIMENT_MODULES",
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "ClaimSettings",
    "Outcome",
    "Verdict",
    "claim",
    "names_or_all",
    "run_claim",
    "verdict_from",
]
