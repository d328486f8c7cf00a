"""The ``captum-ext`` command: run every registered method on a benchmark, write a report."""
