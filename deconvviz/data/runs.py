"""A training run's folder as files: ``metrics.csv`` (one row per epoch, :data:`METRICS`)
and the ``epoch_K.pt`` checkpoints, read without running anything (:mod:`deconvviz.training`
writes them; ``evolution`` and the figures read them)."""
from __future__ import annotations

import csv
import math
import os
from typing import Dict, List, Union

from ..errors import ArgumentError

__all__ = ["METRICS", "read_metrics", "run_checkpoints"]

METRICS = ("epoch", "lr", "train_loss", "train_top1_error", "train_top5_error", "val_loss",
           "val_top1_error", "val_top5_error", "seconds", "images_per_s")


def read_metrics(run: Union[str, "os.PathLike[str]"]) -> List[Dict[str, float]]:
    """The rows of ``RUN/metrics.csv`` as floats (``nan`` where there was no validation)."""
    path = os.path.join(os.fspath(run), "metrics.csv")
    if not os.path.isfile(path):
        raise ArgumentError(f"no metrics.csv in {run}")
    with open(path, newline="") as handle:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()}
                for row in csv.DictReader(handle)]


def run_checkpoints(run: Union[str, "os.PathLike[str]"]) -> List[str]:
    """The ``epoch_K.pt`` files of a run folder, in epoch order."""
    run = os.fspath(run)
    if not os.path.isdir(run):
        raise ArgumentError(f"run folder not found: {run}")
    found = []
    for name in os.listdir(run):
        stem, ext = os.path.splitext(name)
        if ext == ".pt" and stem.startswith("epoch_") and stem[6:].isdigit():
            found.append((int(stem[6:]), os.path.join(run, name)))
    if not found:
        raise ArgumentError(f"no epoch_K.pt checkpoints in {run}")
    return [p for _, p in sorted(found)]
