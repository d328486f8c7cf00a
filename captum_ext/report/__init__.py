"""The HTML report written by ``captum-ext report``: the methods it runs, the scores, the page.

The command line itself is :mod:`captum_ext.cli`.
"""
