"""Training-time losses that shape a model's attributions."""

__all__: list[str] = []
