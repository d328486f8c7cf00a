"""Calibrations that turn raw parameter-saliency profiles into comparable scores."""

__all__: list[str] = []
