"""What every analysis and training run returns: a result that draws itself, shows itself in
Jupyter, saves itself in the file types written once in :data:`deconvviz._io.DATA_FORMATS`,
and hands over its table where it holds one.

A result class names its ``kind`` (its entry there), draws in :meth:`Result.figure` (with a
function of :mod:`deconvviz.figures`, given the result: a figure never runs a model) and
writes its data in :meth:`Result._save_data`; showing and saving come from here. This module
sits below the analyses and training (both return results) and above the figures (results
draw through them): it imports neither the engine nor the zoo.

The conventions:

- **A result that draws** has ``figure()``; ``save("x.png")`` (``.jpg .pdf .svg``) writes
  that figure and Jupyter shows it (``_repr_png_``).
- **A result that cannot draw** (its ``kind`` is in :data:`deconvviz._io.UNDRAWN`: a list
  of files written, say) raises :class:`NoFigureError` from ``figure()``; ``_repr_png_``
  returns ``None``, so Jupyter shows its ``repr``; it saves its data formats only.
- **A result whose figure runs a model again** (a scan's figure projects its hits) sets
  ``shown_in_jupyter = False``: Jupyter shows its ``repr``, and ``figure()`` draws on request.
- **A result that holds a table** returns it from ``_table()`` as columns (name -> one value
  per row); ``to_dict()`` gives those columns (``pandas.DataFrame(result.to_dict())`` is the
  table) and ``to_csv(path=None)`` the CSV text, or writes it. Other results raise
  :class:`NoTableError` from both, unless they define ``to_dict`` themselves.
"""
from __future__ import annotations

import csv
import io
import os
from typing import ClassVar, Dict, List, Optional, Tuple, Union

from . import figures
from ._io import DATA_FORMATS, UNDRAWN, check_output_path, result_formats, write_atomically
from .errors import ArgumentError

__all__ = ["Result", "NoFigureError", "NoTableError", "csv_text"]

PathArg = Union[str, "os.PathLike[str]"]


class NoFigureError(ArgumentError):
    """``figure()`` of a result that has no figure (it lists files, say)."""


class NoTableError(ArgumentError):
    """``to_dict()`` or ``to_csv()`` of a result that holds no table."""


class Result:
    """The shared shape of every result (``figure``, ``_repr_png_``, ``save``, ``to_dict``,
    ``to_csv``, ``formats``)."""

    kind: ClassVar[str]
    shown_in_jupyter: ClassVar[bool] = True

    @classmethod
    def formats(cls) -> Tuple[str, ...]:
        """The file types :meth:`save` writes: the figure's (none for a result that cannot
        draw), then the data's."""
        return result_formats(cls.kind)

    @classmethod
    def has_figure(cls) -> bool:
        """Whether the result has a figure."""
        return cls.kind not in UNDRAWN

    def figure(self, **options):
        """The result's figure (a matplotlib ``Figure``)."""
        if not self.has_figure():
            raise NoFigureError(f"a {type(self).__name__} has no figure; its data is "
                                f"to_dict(), to_csv() or save() as "
                                f"{', '.join(DATA_FORMATS[self.kind])}")
        raise NotImplementedError

    def _repr_png_(self) -> Optional[bytes]:
        if not (self.has_figure() and self.shown_in_jupyter):
            return None  # Jupyter falls back to the repr
        return self.figure()._repr_png_()

    def save(self, path: PathArg, *, dpi: Optional[float] = None, **figure_options) -> str:
        """Write the figure (``.png .jpg .pdf .svg``, ``figure_options`` as in
        :meth:`figure`) or the data (see :meth:`formats`) to ``path``, by its extension;
        returns the path."""
        path = check_output_path(os.fspath(path), self.formats())
        ext = os.path.splitext(path)[1].lower()
        if ext in DATA_FORMATS[self.kind]:
            return self._save_data(path, ext)
        return figures.save_figure(self.figure(**figure_options), path, dpi=dpi)

    def _save_data(self, path: str, ext: str) -> str:
        if ext == ".csv":
            return self.to_csv(path)
        raise NotImplementedError

    def _table(self) -> Optional[Dict[str, list]]:
        """The result's table as columns (name -> one value per row), or ``None``."""
        return None

    def to_dict(self) -> Dict[str, list]:
        """The result's table as columns: name -> one value per row (plain Python values);
        ``pandas.DataFrame(result.to_dict())`` is the table."""
        table = self._table()
        if table is None:
            raise NoTableError(f"a {type(self).__name__} holds no table; save it as "
                               f"{', '.join(self.formats())}")
        return table

    def to_csv(self, path: Optional[PathArg] = None) -> str:
        """The table (:meth:`to_dict`) as CSV: its text, or, given ``path``, written there
        (atomically; the path is returned)."""
        table = self._table()
        if table is None:
            raise NoTableError(f"a {type(self).__name__} holds no table to write as CSV")
        text = csv_text(table)
        if path is None:
            return text
        path = check_output_path(os.fspath(path), (".csv",))
        data = text.encode()
        return write_atomically(path, lambda f: f.write(data))


def csv_text(columns: Dict[str, List[object]]) -> str:
    """Columns (name -> one value per row, all as long) as CSV text with a header row."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(columns))
    writer.writerows(zip(*columns.values()))
    return buffer.getvalue()


def csv_columns(text: str) -> Dict[str, list]:
    """A CSV table's text (header first; ``#`` comment lines skipped) as columns, numbers
    read back as numbers: what :meth:`Result._table` returns for results that write CSV."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r and not r[0].startswith("#")]
    if not rows:
        return {}

    def value(cell: str):
        try:
            number = float(cell)
        except ValueError:
            return cell
        return int(number) if number.is_integer() and "." not in cell and "e" not in cell \
            else number

    return {name: [value(r[i]) for r in rows[1:]] for i, name in enumerate(rows[0])}

