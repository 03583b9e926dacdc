"""What every table of benchmarks/gpu.py shares: the device, best-of timing, the zoo's models
with random weights, the photo, and the float64 oracle (tests/oracle.py)."""
from __future__ import annotations

import copy
import os
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(HERE, "examples", "images", "chelsea.png")
sys.path.insert(0, os.path.join(HERE, "tests"))  # the float64 oracle: tests/oracle.py


class BenchBase:
    def __init__(self, args):
        import torch

        import deconvviz as dv

        self.torch, self.dv, self.args = torch, dv, args
        self.device = torch.device(args.device)
        self.small = args.small
        self.size = 64 if args.small else 224

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def timed(self, fn, repeat=3):
        """Best of ``repeat`` after one warm-up call: seconds, and the last result."""
        fn()
        self.sync()
        best, out = float("inf"), None
        for _ in range(repeat):
            start = time.perf_counter()
            out = fn()
            self.sync()
            best = min(best, time.perf_counter() - start)
        return best, out

    def model(self, name, device=None):
        m = self.dv.load_model(name, weights=None).eval()
        return m.to(device or self.device)

    def photo(self, model):
        x, _ = self.dv.load_image(PHOTO, model)
        if self.small:
            x = self.torch.nn.functional.interpolate(x, size=(self.size, self.size),
                                                     mode="bilinear")
        return x

    # -- the float64 oracle (tables 1 and 5) ------------------------------------------------
    def oracle(self, model, x, path, features, method, decisions=None):
        """Projections [K, 3, H, W] by float64 autograd on the CPU with the method's ReLU
        rule (tests/oracle.py); ``decisions``: the ReLU masks and max-pool switches of a
        float32 forward pass instead of float64's."""
        from oracle import oracle_project

        model = copy.deepcopy(model).cpu().double()
        return oracle_project(model, x.detach().cpu().double(), path, features, "max",
                              method=method, decisions=decisions)[0]

    def decisions(self, model, x):
        """The ReLU masks and max-pool switches of ``model(x)`` computed exactly as deconvviz
        records them, and how many differ from float64's other than at a tie."""
        from oracle import record_decisions, undecided

        from deconvviz.engine.precision import computing

        with computing("exact"):
            ours = record_decisions(model, x)
        reference = record_decisions(copy.deepcopy(model).cpu().double(),
                                     x.detach().cpu().double())
        flips = sum(int((o[1] != r[1]).sum()) for o, r in zip(ours, reference))
        return ours, flips, undecided(ours, reference)

    def rel(self, a, b):
        from deconvviz.engine.precision import rel_error

        return rel_error(a.detach().double().cpu(), b.detach().double().cpu())
