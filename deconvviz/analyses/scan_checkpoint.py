"""A scan's checkpoints: written atomically beside ``out`` (``OUT.partial``, one per
``torchrun`` rank), read back only by the same scan, and locked so that two scans never
share one."""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

import torch

from .._io import write_atomically
from ..errors import ArgumentError
from . import activation_histogram
from .scan_result import FORMAT

__all__ = ["claim", "release", "checkpoint_path", "save_checkpoint", "load_checkpoint",
           "settled", "beside"]


def claim(partial: Optional[str]) -> Optional[str]:
    """Take ``PARTIAL.lock`` for this process, so that two scans writing the same ``out``
    never share (and overwrite) one checkpoint; a lock left by a process that has ended is
    taken over."""
    if partial is None:
        return None
    lock = partial + ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(lock) as handle:
                    pid = int(handle.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise ArgumentError(f"another scan (process {pid}) is writing "
                                    f"{partial[:-len('.partial')]}; wait for it to end or "
                                    f"choose another --out") from None
            os.unlink(lock)  # left behind by a scan that has ended
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return lock
    raise ArgumentError(f"cannot take the scan lock {lock}")



def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True



def release(lock: Optional[str]) -> None:
    if lock is not None and os.path.exists(lock):
        os.unlink(lock)



def checkpoint_path(out, rank: int, world: int) -> Optional[str]:
    if out is None:
        return None
    base = os.fspath(out) + ".partial"
    return base if world == 1 else f"{base}.rank{rank}-of-{world}"



def beside(fn, *args) -> Future:
    """``fn(*args)`` on a thread of its own, started now."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)



def settled(meta: dict) -> dict:
    """``meta`` with each value computed beside the scan waited for (in place)."""
    for key, value in meta.items():
        if isinstance(value, Future):
            meta[key] = value.result()
    return meta



def save_checkpoint(path: str, meta: dict, state: dict) -> None:
    data = {"format": FORMAT, "meta": meta, "done": state["done"], "skipped": state["skipped"],
            "tops": {l: {k: v.cpu() for k, v in t.items()} for l, t in state["tops"].items()},
            "histograms": {l: activation_histogram.pack(h) for l, h in state["hists"].items()},
            "rel_tops": {l: {k: v.cpu() for k, v in t.items()}
                         for l, t in state["rel_tops"].items()}}
    write_atomically(path, lambda f: torch.save(data, f))



def load_checkpoint(path: str, meta: dict, device) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    theirs = {**data["meta"], "format": data.get("format", "deconvviz-scan/1")}
    ours = {**meta, "format": FORMAT}
    if "precision" not in theirs:  # written before precision was recorded: the CPU's float32
        theirs["precision"] = "exact"
    differ = sorted(k for k in set(theirs) | set(ours)
                    if k not in ("versions", "device", "decoder")
                    and theirs.get(k) != ours.get(k))
    if differ:
        raise ArgumentError(f"checkpoint {path} is from a different scan ({', '.join(differ)} "
                            f"differ); delete it or drop --resume")
    return {"done": data["done"], "skipped": [tuple(s) for s in data["skipped"]],
            "decoder": data["meta"].get("decoder", "pillow"),
            "tops": {l: {k: v.to(device) for k, v in t.items()} for l, t in data["tops"].items()},
            "hists": {l: activation_histogram.unpack(h, device)
                      for l, h in data["histograms"].items()},
            "rel_tops": {l: {k: v.to(device) for k, v in t.items()}
                         for l, t in data.get("rel_tops", {}).items()}}
