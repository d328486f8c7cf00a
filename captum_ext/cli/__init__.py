"""The ``captum-ext`` command line (``captum-ext = "captum_ext.cli:main"``).

One module per subcommand; the HTML report they write is :mod:`captum_ext.report`:

- :mod:`captum_ext.cli._main`: the parser, the ``report`` subcommand and :func:`main`;
- :mod:`captum_ext.cli.calibrate`: ``captum-ext calibrate`` (a parameter-saliency calibration);
- :mod:`captum_ext.cli.attribute`: ``captum-ext attribute`` (one method over a benchmark split,
  in resumable shards);
- :mod:`captum_ext.cli.launch`: set-up shared by the subcommands that also run under
  ``torchrun``.

``python -m captum_ext ...`` runs the same command.
"""

from captum_ext.cli._main import main

__all__ = ["main"]
