"""Compute everything the report shows: model, chosen images, attributions, timings, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from captum_ext._compat import NullProgress, progress
from captum_ext.benchmark.training import TrainedModel, load_data, train
from captum_ext.metrics.summary import evaluate_attributions
from captum_ext.report.registry import MethodSpec, available_methods

#: Misclassified test images the report tries to include, as a fraction of ``n_images``.
WRONG_FRACTION = 0.25
#: How many test images are scanned for misclassified ones.
SCAN = 600
#: Max-sensitivity samples per image (Captum's default is 10; each one re-runs the method).
SENSITIVITY_SAMPLES = {False: 10, True: 2}
#: Slow methods get fewer max-sensitivity samples (never fewer than 2): at most about this many
#: seconds of re-runs per method.
SENSITIVITY_BUDGET_S = 20.0


def sensitivity_samples(seconds: float, quick: bool) -> int:
    """Max-sensitivity samples for a method whose batch took ``seconds``."""
    most = SENSITIVITY_SAMPLES[quick]
    return max(2, min(most, int(SENSITIVITY_BUDGET_S / max(seconds, 1e-9))))


@dataclass
class MethodResult:
    """The outcome of one method on the report's batch.

    Attributes:
        name: Registry name.
        reference: Paper reference.
        seconds: Wall time of the ``attribute`` call (None if it failed).
        attributions: Attributions shaped like the inputs (None if it failed).
        error: ``"ExceptionType: message"`` if the method raised.
        metrics: Per-example metric values (name -> list), filled when metrics are computed.
        sensitivity_samples: Max-sensitivity samples used (see :func:`sensitivity_samples`).
    """

    name: str
    reference: str
    seconds: float | None = None
    attributions: torch.Tensor | None = None
    error: str | None = None
    metrics: dict[str, list[float]] = field(default_factory=dict)
    sensitivity_samples: int = 0


@dataclass
class ReportData:
    """Everything the HTML and JSON writers need."""

    trained: TrainedModel
    images: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor
    masks: torch.Tensor | None
    indices: list[int]
    class_names: Sequence[str]
    results: list[MethodResult]
    quick: bool = False


def select_images(
    model: nn.Module, dataset, n_images: int
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Pick ``n_images`` test items, about a quarter of them misclassified (when any exist).

    Returns the chosen indices (misclassified first), and the images and the model's
    predictions of the first :data:`SCAN` items (index them with the chosen indices).
    """
    n_scan = min(len(dataset), max(SCAN, n_images))
    items = [dataset[i] for i in range(n_scan)]
    images = torch.stack([it[0] for it in items])
    labels = torch.tensor([int(it[1]) for it in items])
    with torch.no_grad():
        preds = torch.cat([model(images[i : i + 256]).argmax(1) for i in range(0, n_scan, 256)])
    wrong = [i for i in range(n_scan) if preds[i] != labels[i]]
    right = [i for i in range(n_scan) if preds[i] == labels[i]]
    n_wrong = min(len(wrong), max(1, round(WRONG_FRACTION * n_images))) if n_images > 1 else 0
    chosen = wrong[:n_wrong] + right[: n_images - n_wrong]
    chosen += wrong[n_wrong : n_wrong + n_images - len(chosen)]  # too few correct ones
    return chosen, images, preds


def run_methods(
    specs: Sequence[MethodSpec],
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    quick: bool,
    show_progress: bool = True,
    seed: int = 0,
) -> list[MethodResult]:
    """Run each method once on the whole batch, timing it; failures are recorded, not raised."""
    bar = progress(desc="captum-ext report", total=len(specs)) if show_progress else NullProgress()
    results = []
    try:
        for spec in specs:
            res = MethodResult(spec.name, spec.reference)
            start = time.perf_counter()
            try:
                attr = spec.run(model, inputs, target, quick=quick, seed=seed)
                if attr.shape != inputs.shape:
                    raise RuntimeError(
                        f"returned shape {tuple(attr.shape)}, expected {tuple(inputs.shape)}"
                    )
                if not torch.isfinite(attr).all():
                    raise RuntimeError("returned non-finite attributions")
                res.seconds = time.perf_counter() - start
                res.attributions = attr.float()
            except Exception as err:  # noqa: BLE001 - one failing method must not sink the report
                res.error = f"{type(err).__name__}: {err}"
            results.append(res)
            bar.update()
    finally:
        bar.close()
    return results


def score_methods(
    results: Sequence[MethodResult],
    specs: Sequence[MethodSpec],
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    masks: torch.Tensor | None,
    quick: bool,
    show_progress: bool = True,
    seed: int = 0,
) -> None:
    """Fill each successful result's ``metrics`` with :func:`evaluate_attributions` scores.

    Max-sensitivity re-runs the method on perturbed inputs (:func:`sensitivity_samples` times);
    a metric failure is recorded in ``error`` and does not stop the report.
    """
    bar = progress(desc="captum-ext metrics", total=len(specs)) if show_progress else NullProgress()
    try:
        for res, spec in zip(results, specs):
            if res.attributions is not None and res.seconds is not None:
                res.sensitivity_samples = sensitivity_samples(res.seconds, quick)
                try:
                    scores = evaluate_attributions(
                        model,
                        inputs,
                        res.attributions,
                        target,
                        masks,
                        explain=lambda x, t, spec=spec: spec.run(model, x, t, quick, seed),
                        multiply_by_inputs=bool(
                            getattr(spec.build(model), "multiplies_by_inputs", False)
                        ),
                        n_sensitivity_samples=res.sensitivity_samples,
                        generator=torch.Generator(device=inputs.device).manual_seed(seed),
                    )
                    res.metrics = {k: [float(v) for v in vals] for k, vals in scores.items()}
                except Exception as err:  # noqa: BLE001 - reported, like method failures
                    res.error = f"metrics failed: {type(err).__name__}: {err}"
            bar.update()
    finally:
        bar.close()


def build_report_data(
    dataset_name: str,
    model_name: str,
    method_names: Sequence[str],
    n_images: int,
    quick: bool,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> ReportData:
    """Train or load the model, choose images and run the methods (see :func:`run_methods`)."""
    log(f"Training or loading {model_name} on {dataset_name} (cached after the first run) ...")
    trained = train(model_name, dataset_name)
    model = trained.model.eval()
    test_set = load_data(trained.config, "test")
    indices, scanned, preds = select_images(model, test_set, n_images)
    items = [test_set[i] for i in indices]
    images = scanned[indices]
    labels = torch.tensor([int(it[1]) for it in items])
    masks = torch.stack([it[2] for it in items]) if getattr(test_set, "has_masks", False) else None
    predictions = preds[indices]
    registry = available_methods()
    specs = [registry[name] for name in method_names]
    log(f"Explaining {len(indices)} test images with {len(specs)} methods ...")
    results = run_methods(specs, model, images, predictions, quick, show_progress)
    log("Scoring the attributions (fidelity, infidelity, max-sensitivity, localisation) ...")
    score_methods(results, specs, model, images, predictions, masks, quick, show_progress)
    return ReportData(
        trained=trained,
        images=images,
        labels=labels,
        predictions=predictions,
        masks=masks,
        indices=list(indices),
        class_names=list(test_set.classes),
        results=results,
        quick=quick,
    )
