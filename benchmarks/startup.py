"""Start-up time of the command line: how long each command takes to answer when it needs no
model. Each command runs as a new process, as a user types it; the best and the median of
``--repeat`` runs are printed (seconds).

    .venv/bin/python benchmarks/startup.py            # --repeat 7
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTO = os.path.join(HERE, "..", "examples", "images", "chelsea.png")
DECONVVIZ = [sys.executable, "-m", "deconvviz"]

CASES = [
    ("deconvviz --help", DECONVVIZ + ["--help"], 0),
    ("deconvviz show --help", DECONVVIZ + ["show", "--help"], 0),
    ("deconvviz scan --help", DECONVVIZ + ["scan", "--help"], 0),
    ("unknown model", DECONVVIZ + ["show", "--model", "vgg17", "--layer", "conv1_1", PHOTO], 2),
    ("bad feature list", DECONVVIZ + ["show", "--model", "vgg16", "--layer", "conv1_1",
                                      "--features", "3,x", PHOTO], 2),
    ("bad output format", DECONVVIZ + ["show", "--model", "vgg16", "--layer", "conv1_1",
                                       "--out", "fig.gif", PHOTO], 2),
    ("import deconvviz.Deconvnet (torch)", [sys.executable, "-c",
                                            "import deconvviz; deconvviz.Deconvnet"], 0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("| command | best s | median s |\n|---|---:|---:|")
    for label, command, code in CASES:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode != code:
                raise SystemExit(f"{label}: exit {proc.returncode}, expected {code}:\n"
                                 f"{proc.stderr}")
        print(f"| `{label}` | {min(times):.3f} | {statistics.median(times):.3f} |")


if __name__ == "__main__":
    main()
