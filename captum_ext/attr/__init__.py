"""Attribution methods that follow Captum's contract.

Each class can replace a Captum attribution in one line, be wrapped in
:class:`captum.attr.NoiseTunnel`, and be scored with :mod:`captum.metrics`.
"""

__all__: list[str] = []
