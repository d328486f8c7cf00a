"""Evaluation metrics; where Captum defines a contract (``captum.metrics``), they plug into it."""

__all__: list[str] = []
