"""captum-ext: research attribution methods and evaluation metrics for Captum.

The public API lives in the subpackages; the attribution classes and the PILCRO loss are also
re-exported here:

- :mod:`captum_ext.attr`: attribution classes (Captum contract): LEG, LEGTV, CAFO, CASO, RelEx,
  ParameterSaliency.
- :mod:`captum_ext.calibration`: z-score and POT calibrations for parameter saliency.
- :mod:`captum_ext.losses`: training-time losses (PILCRO).
- :mod:`captum_ext.metrics`: evaluation metrics usable with ``captum.metrics``.
- :mod:`captum_ext.evaluation`: protocols that edit models (filter pruning, fine-tuning).
- :mod:`captum_ext.dataset_attribution`: a whole dataset attributed into resumable chunk files,
  on one process or under ``torchrun``.
- :mod:`captum_ext.distributed`: ``torch.distributed`` helpers and ``ShardSampler``.
- :mod:`captum_ext.benchmark`: the embedded synthetic benchmark and small models.
- :mod:`captum_ext.cli`: the ``captum-ext`` command; :mod:`captum_ext.report`: the HTML report
  it writes.
- :mod:`captum_ext.visualization`: maps blended over their image (``show_on_image``), imported
  on its own: the library modules do not import matplotlib (``captum.attr`` itself does).
"""

__version__ = "0.1.0"

from captum_ext.attr import CAFO, CASO, LEG, LEGTV, ParameterSaliency, RelEx  # noqa: E402
from captum_ext.losses import PILCRO  # noqa: E402

__all__ = ["CAFO", "CASO", "LEG", "LEGTV", "PILCRO", "ParameterSaliency", "RelEx", "__version__"]
