"""Training-time losses that shape a model's attributions."""

from captum_ext.losses.pilcro import PILCRO

__all__: list[str] = ["PILCRO"]
