"""Writing files: output-path checks before any work, and atomic writes.

Every file deconvviz writes goes through :func:`write_atomically` (a temporary file in the
same folder, then a rename: never half a file), after :func:`check_output_path` has made sure,
before any work starts, that the extension is one the caller can write and that a file can
really be created in the folder (a probe file, not a permission guess: read-only file
systems, ``/proc`` and full disks are caught too).
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Callable, List, Optional, Sequence

from .errors import OutputError

__all__ = ["FIGURE_FORMATS", "DATA_FORMATS", "UNDRAWN", "result_formats", "check_output_path",
           "check_output_folder", "check_writable_folder", "figure_paths", "write_atomically",
           "safe_name", "is_folder_path"]

FIGURE_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")
# What each kind of result saves besides its figure, written once: the results
# (deconvviz.results.Result) and the command line (before torch is imported) read it.
DATA_FORMATS = {
    "projections": (".npy", ".npz"),
    "comparison": (".npz",),
    "sanity": (".csv",),
    "occlusion": (".npz",),
    "invariance": (".csv",),
    "correspondence": (".md", ".csv", ".tex"),
    "evolution": (".npz",),
    "filters": (".csv",),
    "feature_vis": (".npz",),
    "attribution": (".pt", ".npy"),
    "scan": (".pt",),
    "atlas": (".csv",),  # the atlas itself is its folder
    "training": (".csv",),
    "concept_relevance": (".csv", ".pt"),
    "layer_relevance": (".csv", ".pt"),
    "concept_report": (".csv", ".npz"),
    "show": (".csv",),
    "evaluation": (".csv", ".md", ".tex", ".npz"),
}
# The kinds of result that have no figure (show's report: the files it wrote): they save
# their data only.
UNDRAWN = frozenset({"show"})


def result_formats(kind: str) -> tuple:
    """The file types a result of ``kind`` saves to: its figure's (none if it cannot draw),
    then its data's."""
    return (() if kind in UNDRAWN else FIGURE_FORMATS) + DATA_FORMATS[kind]


def check_writable_folder(path: str) -> str:
    """Raise :class:`OutputError` unless a file can be created beside ``path``; returns the
    folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"output folder does not exist: {folder}")
    missing = _missing_folder(os.path.dirname(os.fspath(path)))
    if missing is not None:  # "nodir/../x.pt": the OS needs nodir, abspath drops it
        raise OutputError(f"output folder does not exist: {missing} (in {path})")
    try:
        fd, probe = tempfile.mkstemp(prefix=".deconvviz-probe-", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def _missing_folder(folder: str) -> Optional[str]:
    """The first folder on the way to ``folder``, as the OS walks it (``..`` after a folder
    needs that folder), that is not there; ``None`` when all are."""
    if os.path.isdir(folder or os.curdir):
        return None
    walked = os.sep if os.path.isabs(folder) else ""
    for part in filter(None, folder.split(os.sep)):
        walked = os.path.join(walked, part)
        if not os.path.isdir(walked):
            return walked
    return folder


def check_output_path(path: str, formats: Optional[Sequence[str]] = FIGURE_FORMATS) -> str:
    """Raise :class:`OutputError` unless ``path`` has one of ``formats`` as extension (any, if
    ``None``), is not a folder, and can be written."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if formats is not None and ext not in formats:
        raise OutputError(f"unsupported output format {ext or '(none)'!r} for {path}; use "
                          f"{', '.join(formats)}")
    if os.path.isdir(path):
        raise OutputError(f"{path} is a folder; give a file name")
    check_writable_folder(path)
    return path


def check_output_folder(path: str, marker: str) -> str:
    """Raise :class:`OutputError` unless ``path`` can become an output folder: new, empty, or
    one written before (it holds ``marker``, and will be replaced); never a file or a folder
    of other things. Returns the absolute path."""
    final = os.path.abspath(os.fspath(path)).rstrip(os.sep)
    missing = _missing_folder(os.path.dirname(os.fspath(path).rstrip(os.sep)))
    if missing is not None:
        raise OutputError(f"output folder does not exist: {missing} (in {path})")
    if os.path.exists(final) and not os.path.isdir(final):
        raise OutputError(f"{path} is a file; give a new or empty folder")
    if os.path.isdir(final) and os.listdir(final) and \
            not os.path.exists(os.path.join(final, marker)):
        raise OutputError(f"{path} is not empty and holds no {os.path.splitext(marker)[0]}; "
                          f"give a new or empty folder")
    check_writable_folder(final)
    return final


def write_atomically(path: str, write: Callable[[object], None]) -> str:
    """Write through a temporary file in the same folder, then rename: never half a file.

    Raises:
        OutputError: the file cannot be written (the message names the reason).
    """
    folder = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".deconvviz-", suffix=ext, dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def safe_name(text: str) -> str:
    """``text`` spelt for a file name that every system, ``scp``, ``make`` and a URL take:
    letters, digits, ``_ . + -`` stay, anything else (``:`` of ``torchvision:vit_b_16``, a
    slash, a space) becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)


def is_folder_path(path: str) -> bool:
    """Whether ``path`` names a folder: an existing one, or one spelt with a trailing
    slash."""
    path = os.fspath(path)
    return path.endswith(("/", os.sep)) or os.path.isdir(path)


def figure_paths(images: Sequence[str], model: str, layer: str, out: Optional[str] = None,
                 combine: bool = False) -> List[str]:
    """The figure files ``show`` writes: ``<image>_<model>_<layer>.png`` in the current folder
    (or in ``out`` when it is a folder: an existing one, or a path ending in ``/``), or
    ``out`` (with ``_<image>`` added to its stem for each of several images). Images whose
    names collide (``c.tiff``, ``c.bmp``) keep their extension in the name (``c_tiff``). The
    default names hold no colon: ``torchvision:vit_b_16`` is spelt ``torchvision-vit_b_16``."""
    model = safe_name(model)
    tag = "all" if layer == "all" else safe_name(layer.replace(",", "+").replace("/", "_"))
    folder = None
    if out is not None and is_folder_path(out):
        folder, out = os.fspath(out), None
    if combine:
        return [out or _inside(folder, f"combined_{model}_{tag}.png")]
    if out is not None and len(images) == 1:
        return [out]
    stems = [safe_name(os.path.splitext(os.path.basename(p))[0]) for p in images]
    clash = {s for s in stems if stems.count(s) > 1}
    names = [safe_name(os.path.basename(p).replace(".", "_")) if s in clash else s
             for p, s in zip(images, stems)]
    seen: dict = {}
    for i, name in enumerate(names):  # the same file name in two folders
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}_{seen[name]}"
    if out is None:
        return [_inside(folder, f"{name}_{model}_{tag}.png") for name in names]
    stem, ext = os.path.splitext(out)
    return [f"{stem}_{name}{ext}" for name in names]


def _inside(folder: Optional[str], name: str) -> str:
    return name if folder is None else os.path.join(folder, name)
