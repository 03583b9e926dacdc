"""Check that a change leaves every zoo model's projections bit-identical.

    python scripts/zoo_identity.py save DIR      # with the code before the change
    python scripts/zoo_identity.py compare DIR   # with the code after it

Every zoo model (random weights), two images of noise at 224x224, two layers each (a third of
the way through its overview layers, and the last but one), both modes, the three reverse-pass
methods, features 0 and C/2; one thread, so that the same batch and threads give the same
bits (PyTorch's guarantee). ``compare`` prints one line per projection and the count of those
that differ. The tensors (about 60 MB) stay in DIR: not for the repository.
"""
import os
import sys
import time

import torch

import deconvviz as dv
from deconvviz.engine.passes.layers import aliases_of, overview_layers


def main(command: str, folder: str) -> int:
    torch.set_num_threads(1)
    os.makedirs(folder, exist_ok=True)
    different = 0
    for name in dv.list_models():
        model = dv.load_model(name, weights=None)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        overview = overview_layers(aliases_of(model))
        layers = [overview[len(overview) // 3], overview[-2]]
        for method in ("deconvnet", "guided", "gradient"):
            net = dv.Projector(model, method=method)
            for layer in layers:
                rec = net.record(x, layer)
                channels = rec.activations[layer].shape[1]
                for mode in ("max", "map"):
                    start = time.time()
                    out = net.project(x, layer, features=[0, channels // 2], mode=mode, recording=rec)
                    path = os.path.join(folder, f"{name}_{method}_{layer}_{mode}.pt")
                    if command == "save":
                        torch.save(out, path)
                        status = "saved"
                    else:
                        before = torch.load(path)
                        same = torch.equal(before, out)
                        different += not same
                        status = "identical" if same else \
                            f"DIFFERENT max|d|={float((before - out).abs().max()):.3g}"
                    print(f"{name:12s} {method:9s} {layer:12s} {mode:4s} {status} "
                          f"{time.time() - start:.1f}s", flush=True)
    print("different:", different)
    return 1 if different else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("save", "compare"):
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
