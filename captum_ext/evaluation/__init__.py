"""Evaluation protocols that edit models (filter pruning, one-step fine-tuning)."""

__all__: list[str] = []
