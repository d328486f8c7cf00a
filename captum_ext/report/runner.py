"""Compute everything the report shows: model, chosen images, attributions, timings, metrics.

The report runs on a :class:`ReportInputs`: a model returning logits on images in [0, 1] (any
normalisation lives inside it) and a batch of images with optional labels and masks. It comes
either from the embedded benchmark (:func:`benchmark_inputs`) or from the user's model and image
folder (:func:`captum_ext.report.user_inputs.user_inputs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from captum_ext._compat import NullProgress, progress
from captum_ext.benchmark.training import TrainedModel, load_data, train
from captum_ext.metrics.summary import evaluate_attributions
from captum_ext.report.method_spec import PRESETS, MethodSpec, resolve_kwargs

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
class ReportInputs:
    """The model and the images a report explains.

    Attributes:
        model: Classifier returning logits ``(N, classes)`` for images in [0, 1] (eval mode).
        model_name: Shown in the report (a benchmark name or the ``--model`` spec).
        n_parameters: Parameter count of ``model``.
        images: ``(N, C, H, W)`` in [0, 1].
        names: One caption per image (a file name or ``"test #i"``).
        labels: True classes ``(N,)``, or None when unknown.
        masks: Ground-truth object masks ``(N, H, W)``, or None.
        class_names: Names of the classes, or None (classes are then shown as numbers).
        description: One plain-text sentence about the model and the data.
        trained: The benchmark model's training record (None for a user's model).
        warnings: Messages shown at the top of the report (e.g. random weights).
        details: Extra facts for the metadata block and results.json (JSON-serialisable).
    """

    model: nn.Module
    model_name: str
    n_parameters: int
    images: torch.Tensor
    names: list[str]
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    class_names: list[str] | None = None
    description: str = ""
    trained: TrainedModel | None = None
    warnings: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def class_name(self, k: int) -> str:
        """The name of class ``k`` (its number when there are no names)."""
        names = self.class_names
        return names[k] if names is not None and 0 <= k < len(names) else str(k)


@dataclass
class MethodResult:
    """The outcome of one method on the report's batch.

    Attributes:
        name: Registry name.
        reference: Paper reference.
        settings: The ``attribute`` keyword arguments used (after the preset).
        note: What the preset changes (from the spec's ``notes``).
        seconds: Wall time of the ``attribute`` call (None if it failed).
        attributions: Attributions shaped like the inputs (None if it failed).
        error: ``"ExceptionType: message"`` if the method raised.
        metrics: Per-example metric values (name -> list), filled when metrics are computed.
        sensitivity_samples: Max-sensitivity samples used (see :func:`sensitivity_samples`).
    """

    name: str
    reference: str
    settings: dict = field(default_factory=dict)
    note: str = ""
    seconds: float | None = None
    attributions: torch.Tensor | None = None
    error: str | None = None
    metrics: dict[str, list[float]] = field(default_factory=dict)
    sensitivity_samples: int = 0


@dataclass
class ReportData:
    """Everything the HTML and JSON writers need."""

    inputs: ReportInputs
    predictions: torch.Tensor
    results: list[MethodResult]
    preset: str = PRESETS[0]
    quick: bool = False
    seed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    #: A folder written by ``captum-ext claims``: its table becomes a report section.
    claims_dir: Path | None = None

    @property
    def images(self) -> torch.Tensor:
        """The explained images (``inputs.images``)."""
        return self.inputs.images

    @property
    def masks(self) -> torch.Tensor | None:
        """Their object masks, or None (``inputs.masks``)."""
        return self.inputs.masks

    @property
    def trained(self) -> TrainedModel | None:
        """The benchmark model's training record, None for a user's model."""
        return self.inputs.trained


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


def benchmark_inputs(
    dataset_name: str, model_name: str, n_images: int, log: Callable[[str], None] = print
) -> ReportInputs:
    """Train (or load from the cache) a benchmark model and choose its test images."""
    log(f"Training or loading {model_name} on {dataset_name} (cached after the first run) ...")
    trained = train(model_name, dataset_name)
    model = trained.model.eval()
    test_set = load_data(trained.config, "test")
    indices, scanned, _ = select_images(model, test_set, n_images)
    items = [test_set[i] for i in indices]
    masks = torch.stack([it[2] for it in items]) if getattr(test_set, "has_masks", False) else None
    info = trained.info
    text = f"test accuracy {info['test_accuracy']:.1%}"
    if "shift_accuracy" in info:
        text += f", {info['shift_accuracy']:.1%} under the {info['shift_domain']} domain"
    return ReportInputs(
        model=model,
        model_name=model_name,
        n_parameters=sum(p.numel() for p in model.parameters()),
        images=scanned[indices],
        names=[f"test #{i}" for i in indices],
        labels=torch.tensor([int(it[1]) for it in items]),
        masks=masks,
        class_names=list(test_set.classes),
        description=f"Benchmark model {model_name} trained on {dataset_name} ({text}).",
        trained=trained,
        details={"dataset": dataset_name, "test_indices": list(indices)},
    )


def run_methods(
    specs: Sequence[MethodSpec],
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    quick: bool,
    show_progress: bool = True,
    seed: int = 0,
    preset: str = PRESETS[0],
    n_classes: int | None = None,
) -> list[MethodResult]:
    """Run each method once on the whole batch, timing it; failures are recorded, not raised.

    ``n_classes`` (the model's output size) is measured with one forward pass when None.
    """
    if n_classes is None:
        with torch.no_grad():
            n_classes = int(model(inputs[:1]).shape[-1])
    bar = progress(desc="methods", total=len(specs)) if show_progress else NullProgress()
    results = []
    try:
        for spec in specs:
            settings = resolve_kwargs(spec, inputs, quick, preset=preset, n_classes=n_classes)
            res = MethodResult(
                spec.name, spec.reference, settings=settings, note=spec.notes.get(preset, "")
            )
            start = time.perf_counter()
            try:
                attr = spec.run(
                    model, inputs, target, quick, seed, preset=preset, n_classes=n_classes
                )
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
    preset: str = PRESETS[0],
    n_classes: int | None = None,
) -> None:
    """Fill each successful result's ``metrics`` with :func:`evaluate_attributions` scores.

    Max-sensitivity re-runs the method on perturbed inputs (:func:`sensitivity_samples` times);
    a metric failure is recorded in ``error`` and does not stop the report. ``n_classes`` spares
    each re-run a forward pass that measures the model's output size.
    """
    bar = progress(desc="metrics", total=len(specs)) if show_progress else NullProgress()
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
                        explain=_explainer(spec, model, quick, seed, preset, n_classes),
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


def _explainer(
    spec: MethodSpec, model: nn.Module, quick: bool, seed: int, preset: str, n_classes: int | None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``spec.run`` as the ``explain(x, target)`` of :func:`evaluate_attributions`."""

    def explain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return spec.run(model, x, t, quick, seed, preset=preset, n_classes=n_classes)

    return explain


def build_report_data(
    inputs: ReportInputs,
    specs: Sequence[MethodSpec],
    *,
    preset: str = PRESETS[0],
    quick: bool = False,
    seed: int = 0,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> ReportData:
    """Explain ``inputs`` with every spec (predicted class) and score the maps."""
    model = inputs.model
    with torch.no_grad():
        logits = model(inputs.images)
    predictions, n_classes = logits.argmax(1), int(logits.shape[-1])
    n = len(inputs.images)
    log(f"Explaining {n} images with {len(specs)} methods (preset {preset}) ...")
    start = time.perf_counter()
    results = run_methods(
        specs, model, inputs.images, predictions, quick, show_progress, seed, preset, n_classes
    )
    seconds = {"methods": time.perf_counter() - start}
    log("Scoring the attributions (fidelity, infidelity, max-sensitivity, localisation) ...")
    start = time.perf_counter()
    score_methods(
        results,
        specs,
        model,
        inputs.images,
        predictions,
        inputs.masks,
        quick,
        show_progress,
        seed,
        preset,
        n_classes,
    )
    seconds["metrics"] = time.perf_counter() - start
    return ReportData(inputs, predictions, results, preset, quick, seed, seconds)
