"""deconvviz on one GPU: agreement with a float64 oracle, and speed beside what a user would
write instead (issue 27's tables), in one run of a few minutes.

Run on a machine with a CUDA GPU, from the project's root (captum installed):

    .venv/bin/python benchmarks/gpu.py                 # every table
    .venv/bin/python benchmarks/gpu.py --tables agree,occlusion
    .venv/bin/python benchmarks/gpu.py --small --device cpu   # a quick dry run of the code

Tables (random weights, the bundled chelsea photo at 224 px, mode "max"):

1. agree: the largest difference from a float64 oracle on the CPU (autograd through the same
   model in float64, with the deconvnet's and guided backprop's ReLU rules), relative to the
   oracle's largest value, for 16 features: deconvviz's default (``precision="exact"``), and
   ``precision="tf32"``; the CPU's float32 beside them.
2. speed: every feature of VGG16 and ResNet-50 layers: deconvviz (deconvnet, guided,
   gradient) against a loop of Captum's NeuronDeconvolution (timed on 24 features, scaled) and
   against one batched ``torch.autograd.grad(..., is_grads_batched=True)`` (the gradient; TF32
   as PyTorch's default leaves it, and exact).
3. throughput: ``dv.scan``, ``dv.train`` and ``dv.atlas`` on 2,048 JPEGs of 256 px it writes
   to a temporary folder, against the bare forward (scan) and a bare bf16 channels-last
   training loop (train) on tensors already on the GPU, same batch.
4. occlusion: ``dv.occlusion`` against Captum's ``Occlusion`` (48-px square, stride 8, the
   same positions and batch of 256).

5. flags: why ``"exact"`` sets what it sets: for VGG16 conv5_3 and ResNet-50 layer3, the
   error (16 features) and the time (64 features, the cone and the full-size pass) under each
   variant of cuDNN's settings: deterministic without the autotuner (``"exact"``), the
   autotuner, cuDNN's own default choice, no cuDNN at all (PyTorch's native convolutions),
   and TF32.

6. featurevis: every unit of VGG16 conv5_3 (512) optimised together at 224 px with Lucid's
   defaults, timed over ``--fv-steps`` steps (each step is the same work) and scaled to 512.

It is self-contained: nothing outside this checkout is needed. The tables live beside it:
``gpu_accuracy.py`` (1, 5), ``gpu_speed.py`` (2, 4, 6), ``gpu_throughput.py`` (3), and what they
share in ``gpu_common.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the tables' modules beside it
from gpu_accuracy import AccuracyTables  # noqa: E402
from gpu_common import BenchBase  # noqa: E402
from gpu_speed import SpeedTables  # noqa: E402
from gpu_throughput import ThroughputTables  # noqa: E402

TABLES = ("agree", "speed", "throughput", "occlusion", "flags", "featurevis")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --small")
    ap.add_argument("--tables", default=",".join(TABLES),
                    help=f"comma-separated, from {', '.join(TABLES)}")
    ap.add_argument("--small", action="store_true",
                    help="tiny sizes: checks the script's code, measures nothing useful")
    ap.add_argument("--images", type=int, default=2048, help="JPEGs for the throughput table")
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    ap.add_argument("--fv-steps", type=int, default=16,
                    help="feature visualisation: steps timed (scaled to 512)")
    args = ap.parse_args(argv)
    unknown = set(args.tables.split(",")) - set(TABLES)
    if unknown:
        ap.error(f"unknown table(s) {', '.join(sorted(unknown))}; choose from {', '.join(TABLES)}")
    return args


class Bench(BenchBase, AccuracyTables, SpeedTables, ThroughputTables):
    """Every table, each a method named as in ``--tables``."""


def main(argv=None) -> None:
    args = parse(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA GPU here (torch.cuda.is_available() is False); "
                 "nothing measured. Run it on a GPU machine, or check the script with "
                 "--small --device cpu.")
    if args.device == "cpu" and not args.small:
        sys.exit("benchmarks/gpu.py measures a GPU; on a CPU only --small (a dry run) makes "
                 "sense: benchmarks/cone_vs_captum.py measures the CPU")
    bench = Bench(args)
    name = torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else "cpu"
    print(f"# deconvviz on {name}: torch {torch.__version__}, {os.cpu_count()} CPUs"
          + (" (--small: a dry run, not a measurement)" if args.small else ""))
    started = time.perf_counter()
    failed = []
    for table in args.tables.split(","):
        try:  # one table's failure still leaves the others measured
            getattr(bench, table)()
        except Exception:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            failed.append(table)
    if failed:
        print(f"\n(failed: {', '.join(failed)})")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
