"""captum-ext: research attribution methods and evaluation metrics for Captum.

The public API lives in the subpackages:

- :mod:`captum_ext.attr`: attribution classes (Captum contract).
- :mod:`captum_ext.calibration`: calibrations for parameter saliency.
- :mod:`captum_ext.losses`: training-time losses (PILCRO).
- :mod:`captum_ext.metrics`: evaluation metrics usable with ``captum.metrics``.
- :mod:`captum_ext.benchmark`: the embedded synthetic benchmark and small models.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
