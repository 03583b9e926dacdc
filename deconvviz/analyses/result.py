"""What every analysis returns: a result that draws itself, shows itself in Jupyter and saves
itself, in the file types written once in :data:`deconvviz._io.DATA_FORMATS`.

A result class names its ``kind`` (its entry there), draws in :meth:`Result.figure` (with
a function of :mod:`deconvviz.figures`, given the result: a figure never runs a model) and
writes its data in :meth:`Result._save_data`; showing and saving come from here.
"""
from __future__ import annotations

import os
from typing import ClassVar, Optional, Tuple, Union

from .. import figures
from .._io import DATA_FORMATS, check_output_path, result_formats

__all__ = ["Result"]


class Result:
    """The shared shape of the analyses' results (``figure``, ``_repr_png_``, ``save``)."""

    kind: ClassVar[str]

    @classmethod
    def formats(cls) -> Tuple[str, ...]:
        """The file types :meth:`save` writes: the figure's, then the data's."""
        return result_formats(cls.kind)

    def figure(self, **options):
        """The result's figure (a matplotlib ``Figure``)."""
        raise NotImplementedError

    def _repr_png_(self) -> bytes:
        return self.figure()._repr_png_()

    def save(self, path: Union[str, "os.PathLike[str]"], *, dpi: Optional[float] = None,
             **figure_options) -> str:
        """Write the figure (``.png .jpg .pdf .svg``, ``figure_options`` as in
        :meth:`figure`) or the data (see :meth:`formats`) to ``path``, by its extension;
        returns the path."""
        path = check_output_path(os.fspath(path), self.formats())
        ext = os.path.splitext(path)[1].lower()
        if ext in DATA_FORMATS[self.kind]:
            return self._save_data(path, ext)
        return figures.save_figure(self.figure(**figure_options), path, dpi=dpi)

    def _save_data(self, path: str, ext: str) -> str:
        raise NotImplementedError
