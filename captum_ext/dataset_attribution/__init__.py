"""Attribute a whole dataset, sharded over ranks, into resumable chunk files.

:func:`attribute_dataset` runs any Captum or captum-ext attribution over a dataset, one process
or many (``torchrun``), and saves the attributions chunk by chunk; :class:`AttributionShards`
reads a finished results folder back. The modules:

- :mod:`captum_ext.dataset_attribution.runner`: :func:`attribute_dataset` (the manifest, the
  chunks of every rank, the index written last);
- :mod:`captum_ext.dataset_attribution.shards`: the folder format and its reader;
- :mod:`captum_ext.dataset_attribution._rank`: one rank's share of the work.

The same names are also importable from :mod:`captum_ext.evaluation`, their earlier home, so
code written against it keeps working.
"""

from captum_ext.dataset_attribution.runner import attribute_dataset
from captum_ext.dataset_attribution.shards import AttributionShards

__all__: list[str] = ["AttributionShards", "attribute_dataset"]
