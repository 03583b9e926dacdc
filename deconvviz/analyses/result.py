"""The shared shape of every result, :class:`~deconvviz.results.Result`, under the name it
had here: it lives in :mod:`deconvviz.results`, which the analyses and training both import
(they are one layer and do not import each other)."""
from ..results import NoFigureError, NoTableError, Result

__all__ = ["Result", "NoFigureError", "NoTableError"]
