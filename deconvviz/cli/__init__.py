"""The ``deconvviz`` command: a thin layer over the Python API, one module per command group
(:mod:`.projections`, :mod:`.scans`, :mod:`.methods`, :mod:`.paper`, :mod:`.training`) over
what they share (:mod:`.base`).

Errors are one line on stderr starting with ``error:``; exit code 2 for bad usage or bad input
(every ``ValueError`` deconvviz raises), 130 for Ctrl-C (143 for SIGTERM), 1 for anything
else. ``--debug`` shows the traceback.

Start-up is instant: this module imports only click and deconvviz's light modules (the zoo's
names, the choices, output checks); torch and matplotlib are imported by a command once its
arguments have been checked.
"""
from . import methods, paper, projections, scans, training  # noqa: F401  (register the commands)
from .base import cli, main

__all__ = ["main", "cli"]
