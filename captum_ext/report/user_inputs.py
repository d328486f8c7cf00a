"""Build the report's inputs from the user's model (``--model``) and image folder (``--images``).

Every flag is checked before any heavy work: the images, labels and masks are read first (cheap),
then the model is built and probed with one forward pass at the report's image size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from captum_ext.report.image_folder import Normalized, load_images, parse_normalize
from captum_ext.report.model_spec import load_model
from captum_ext.report.runner import ReportInputs


def user_inputs(
    model: str,
    images: Path,
    *,
    weights: Path | None = None,
    num_classes: int | None = None,
    labels: Path | None = None,
    masks: Path | None = None,
    size: int = 224,
    normalize: str = "imagenet",
    n_images: int | None = None,
    log: Callable[[str], None] = print,
) -> ReportInputs:
    """The user's model (normalisation inside) and their images, labels and masks.

    Args:
        model: ``torchvision:NAME``, ``pkg.module:factory`` or a TorchScript / torch.export file
            (see :func:`captum_ext.report.model_spec.load_model`).
        images: Folder of PNG/JPEG images, flat or one sub-folder per class.
        weights: A state_dict for ``torchvision:`` and factory models.
        num_classes: Number of classes (checked against the model's output).
        labels: CSV ``filename,label`` (class indices).
        masks: Folder of binary object masks with the images' names.
        size: Images are resized and centre-cropped to ``size x size``.
        normalize: ``imagenet``, ``none`` or ``MEAN,STD`` (see :func:`parse_normalize`).
        n_images: Explain the first ``n_images`` images (sorted by name); None: all.
        log: Receives one line per stage.

    Returns:
        A :class:`~captum_ext.report.runner.ReportInputs` whose model takes images in [0, 1].

    Raises:
        ValueError: A flag is invalid (the message names it).
    """
    stats = parse_normalize(normalize)
    # nothing is printed before every flag is checked: a bad input gives exactly one line
    data = load_images(images, size=size, labels=labels, masks=masks, limit=n_images)
    loaded = load_model(model, weights=weights, num_classes=num_classes, probe_size=size)
    net = loaded.model if stats is None else Normalized(loaded.model, *stats).eval()
    class_names = data.class_names
    labels_t = data.labels
    if class_names is not None and all(c.isdigit() for c in class_names):
        # folders named by class index ("207/dog.png"): use the numbers, not the folder order
        assert labels_t is not None  # class folders always label every image (load_images)
        labels_t = torch.tensor([int(class_names[int(k)]) for k in labels_t])
        class_names = None
    if labels_t is not None and int(labels_t.max()) >= loaded.n_classes:
        raise ValueError(
            f"--labels: class {int(labels_t.max())} is out of range for a model with "
            f"{loaded.n_classes} outputs"
        )
    if class_names is not None and len(class_names) != loaded.n_classes:
        raise ValueError(
            f"--images has {len(class_names)} class folders but the model has "
            f"{loaded.n_classes} outputs; name the folders by class index (e.g. 207/) instead"
        )
    log(f"Read {len(data.names)} images from {images} ({size} x {size})")
    log(f"Loaded the model {loaded.name} ({loaded.n_parameters:,} parameters)")
    norm = "none" if stats is None else f"mean {stats[0]}, std {stats[1]}"
    description = (
        f"Your model {loaded.name} ({loaded.n_parameters:,} parameters, {loaded.n_classes} "
        f"classes) on the images of {images}, resized and centre-cropped to {size} x {size}, "
        f"normalised with {norm} inside the model."
    )
    return ReportInputs(
        model=net,
        model_name=loaded.name,
        n_parameters=loaded.n_parameters,
        images=data.images,
        names=list(data.names),
        labels=labels_t,
        masks=data.masks,
        class_names=class_names,
        description=description,
        warnings=list(loaded.warnings),
        details={
            "images_folder": str(images),
            "labels": None if labels is None else str(labels),
            "masks": None if masks is None else str(masks),
            "size": size,
            "normalize": normalize,
            "model_kind": loaded.kind,
        },
    )
