"""benchmarks/gpu.py's table 3: dv.scan, dv.train and dv.atlas reading JPEGs, against bare GPU
loops on tensors already there."""
# ruff: noqa: B023  (the closures below are timed at once, inside the loop that binds them)
from __future__ import annotations

import os
import shutil
import tempfile
import time

from gpu_common import PHOTO


class ThroughputTables:
    # -- 3. throughput on JPEGs ------------------------------------------------------------
    def jpegs(self, n, classes, size=256):
        import numpy as np
        from PIL import Image

        root = tempfile.mkdtemp(prefix="deconvviz-gpu-bench-")
        base = np.asarray(Image.open(PHOTO).convert("RGB").resize((size, size)))
        rng = np.random.default_rng(0)
        for i in range(n):
            folder = os.path.join(root, f"c{i % classes}")
            os.makedirs(folder, exist_ok=True)
            img = np.roll(base, int(rng.integers(0, size)), axis=1).astype(int)
            img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype("uint8")
            Image.fromarray(img).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
        return root

    def throughput(self):
        dv, torch = self.dv, self.torch
        from deconvviz.engine.passes.graph import trace
        from deconvviz.engine.passes.layers import aliases_of, resolve_layer
        from deconvviz.engine.passes.recording import forward_to

        n = 64 if self.small else self.args.images
        batch = 8 if self.small else 128
        workers = 1 if self.small else self.args.workers
        folder = self.jpegs(n, classes=4)
        print(f"\n## 3. Reading {n} JPEGs of 256 px (batch {batch}, {workers} loader "
              f"workers), images/s\n")
        print("| pipeline | deconvviz | bare GPU loop on tensors already there | ratio |")
        print("|---|---:|---:|---:|")
        from deconvviz.engine.precision import computing

        scan_path = None
        try:
            self.decode_only(folder, batch)
            for name, layers in [("vgg16", ["conv3_3", "conv5_3"]),
                                 ("resnet50", ["layer2", "layer3"])]:
                model = self.model(name)
                out = os.path.join(folder, f"{name}.pt")
                traced = trace(model)
                nodes = [resolve_layer(traced, l, aliases_of(model))[2] for l in layers]
                forward = forward_to(traced, nodes)
                xb = torch.randn(batch, 3, self.size, self.size, device=self.device)
                scans = {}
                for precision in ("tf32", "exact"):  # exact last: the atlas reads that one
                    rates = []
                    for _ in range(2):  # the best of two whole calls (the first warms cuDNN)
                        start = time.perf_counter()
                        scans[precision] = dv.scan(model, folder, layers=layers, hits=9,
                                                   batch_size=batch, workers=workers, out=out,
                                                   progress=False, precision=precision)
                        self.sync()
                        rates.append(n / (time.perf_counter() - start))
                    with torch.no_grad(), computing(precision):
                        bare_s, _ = self.timed(lambda: forward(xb), repeat=5)
                    bare = batch / bare_s
                    ours = max(rates)
                    print(f"| dv.scan {name} {'+'.join(layers)}, {precision} (calls: "
                          f"{', '.join(f'{r:.0f}' for r in rates)}) | {ours:.0f} | "
                          f"{bare:.0f} ({precision}) | {ours / bare:.2f} |", flush=True)
                with torch.no_grad():  # PyTorch's own default (TF32 for cuDNN)
                    bare_s, _ = self.timed(lambda: forward(xb), repeat=5)
                print(f"| (bare forward, PyTorch's default flags) | - | {batch / bare_s:.0f} | "
                      f"- |", flush=True)
                for layer in layers:  # how far TF32 moves the hits' values
                    exact = scans["exact"]._tops(layer)["values"][:, 0]
                    fast = scans["tf32"]._tops(layer)["values"][:, 0]
                    fired = exact.isfinite() & fast.isfinite()
                    drift = float((fast - exact)[fired].abs().max() / exact[fired].max())
                    print(f"| (TF32 scan's strongest hits against exact, {layer}: largest "
                          f"difference {drift:.1e} of the strongest) | - | - | - |", flush=True)
                scan_path = scan_path or out
            self.train(folder, n, batch, workers)
            site = os.path.join(folder, "atlas")
            model = self.model("vgg16")
            layer = "conv3_3" if self.small else "conv5_3"
            result = dv.atlas(scan_path, site, model=model, layers=[layer], progress=False)
            hits = result.timings["hits"]
            print(f"| dv.atlas vgg16 {layer}, {hits} hits | "
                  f"{hits / result.timings['projection']:.0f} hits/s (projection), "
                  f"{hits / (result.timings['projection'] + result.timings['writing']):.0f} "
                  f"hits/s (with writing) | - | - |", flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def decode_only(self, folder, batch):
        """The reading pipeline's ceiling: the bytes already in memory, decoded, resized,
        cropped and normalised in batches on the device (no model)."""
        from deconvviz.data import jpeg_batches
        from deconvviz.data.zoo import Preprocessing

        paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
                       if f.endswith(".jpg"))
        start = time.perf_counter()
        datas = [jpeg_batches.read_jpeg(p) for p in paths]
        read_s = time.perf_counter() - start
        prep = Preprocessing()

        def decode():
            for i in range(0, len(paths), batch):
                jpeg_batches.decode_batch(datas[i:i + batch], paths[i:i + batch], prep,
                                          str(self.device))
        decode_s, _ = self.timed(decode, repeat=1)
        print(f"| (reading the bytes, one process) | {len(paths) / read_s:.0f} | - | - |")
        print(f"| (decode, resize, crop, normalise on {self.device.type}, bytes in memory) | "
              f"{len(paths) / decode_s:.0f} | - | - |", flush=True)

    def train(self, folder, n, batch, workers):
        dv, torch = self.dv, self.torch
        out = os.path.join(folder, "run")
        result = dv.train("zfnet", folder, out=out, epochs=2 if self.small else 3, batch_size=batch,
                          workers=workers, device=str(self.device), save_at=[], progress=False,
                          resize_size=64 if self.small else None,
                          crop_size=56 if self.small else None)
        rates = [m.get("images_per_s", 0) for m in result.metrics][1:]
        ours = sum(rates) / max(len(rates), 1)
        model = self.model("zfnet").train().to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        side = 56 if self.small else self.size
        xb = torch.randn(batch, 3, side, side, device=self.device).to(
            memory_format=torch.channels_last)
        yb = torch.randint(0, 1000, (batch,), device=self.device)

        def steps():
            for _ in range(10):
                with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                    enabled=self.device.type == "cuda"):
                    loss = torch.nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        bare_s, _ = self.timed(steps, repeat=2)
        bare = 10 * batch / bare_s
        print(f"| dv.train zfnet, epochs 2-3 | {ours:.0f} | {bare:.0f} (bf16, channels-last) | "
              f"{ours / bare:.2f} |", flush=True)
