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

It is self-contained: nothing outside this checkout is needed.
"""
# ruff: noqa: B023  (the closures below are timed at once, inside the loop that binds them)
from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(HERE, "examples", "images", "chelsea.png")
sys.path.insert(0, os.path.join(HERE, "tests"))  # the float64 oracle: tests/oracle.py
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


class Bench:
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

    # -- 1. agreement with a float64 oracle -----------------------------------------------
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

    def agree(self):
        dv = self.dv
        cases = [("zfnet", "conv3"), ("vgg16", "conv5_3"), ("resnet50", "layer3"),
                 ("torchvision:efficientnet_b0", None)]
        if self.small:
            cases = [("zfnet", "conv3"), ("vgg16", "conv3_3")]
        k = 4 if self.small else 16
        print("\n## 1. Agreement with a float64 oracle (16 features, max mode; largest "
              "difference / oracle's largest value)\n")
        print("The oracle decides each ReLU's mask and max-pool's switch by its own float64 "
              "values; 'given the decisions': by the GPU's float32 forward pass (whose "
              "decisions that differ from float64's are counted; all must be ties, within "
              "1e-4 of the layer's largest input).\n")
        print("| model | layer | method | deconvviz default (exact) | exact, given the "
              "decisions | decisions that differ (not ties) | precision='tf32' | CPU float32 |")
        print("|---|---|---|---:|---:|---|---:|---:|")
        for name, layer in cases:
            cpu_model = self.model(name, "cpu")
            x = self.photo(cpu_model)
            gpu_model = self.model(name)
            if layer is None:
                names = [l.name for l in dv.list_layers(cpu_model)]
                layer = names[len(names) // 2]
            decisions, flips, wrong = self.decisions(gpu_model, x.to(self.device))
            # the oracle has the ReLU rules only: other activations (SiLU) by the gradient
            methods = (["deconvnet", "guided", "gradient"] if "efficientnet" not in name
                       else ["gradient"])
            for method in methods:
                net_cpu = dv.Projector(cpu_model, method=method)
                features = list(range(k))
                path = net_cpu.aliases.get(layer, layer)
                expected = self.oracle(cpu_model, x, path, features, method)
                given = self.oracle(cpu_model, x, path, features, method, decisions)
                row = []
                for precision in ("exact", "tf32"):
                    net = dv.Projector(gpu_model, method=method, precision=precision)
                    got = net.project(x.to(self.device), layer, features=features)[0]
                    row.append(f"{self.rel(got, expected):.1e}")
                    if precision == "exact":
                        row.append(f"{self.rel(got, given):.1e}")
                        row.append(f"{flips} ({len(wrong)})")
                row.append(f"{self.rel(net_cpu.project(x, layer, features=features)[0], expected):.1e}")
                print(f"| {name} | {layer} | {method} | " + " | ".join(row) + " |", flush=True)

    # -- 2. projection speed ---------------------------------------------------------------
    def batched_grad(self, model, x, path, features):
        """The gradient of each feature's strongest unit, all seeds at once."""
        torch = self.torch
        from torchvision.models.feature_extraction import create_feature_extractor

        fx = create_feature_extractor(model, {path: "a"})
        chunk = 128

        def run():
            xx = x.clone().requires_grad_(True)
            a = fx(xx)["a"]
            flat = a[0].flatten(1)
            outs = []
            for c0 in range(0, len(features), chunk):
                fs = torch.as_tensor(features[c0:c0 + chunk], device=a.device)
                pos = flat[fs].argmax(1)
                seeds = torch.zeros((len(fs),) + a.shape, device=a.device)
                seeds.view(len(fs), a.shape[1], -1)[torch.arange(len(fs)), fs, pos] = \
                    flat[fs, pos]
                (g,) = torch.autograd.grad(a, xx, seeds, is_grads_batched=True,
                                           retain_graph=True)
                outs.append(g[:, 0])
            return torch.cat(outs)
        return run

    def speed(self):
        dv, torch = self.dv, self.torch
        from captum.attr import NeuronDeconvolution

        from deconvviz.engine.precision import computing

        cases = [("vgg16", ["conv3_3", "conv4_3", "conv5_3"]),
                 ("resnet50", ["layer1", "layer2", "layer3", "layer4"])]
        if self.small:
            cases = [("vgg16", ["conv3_3"])]
        print("\n## 2. Projecting every feature of a layer (max mode), seconds\n")
        print("| model | layer | features | deconvnet | guided | gradient | Captum loop | "
              "ratio (deconvnet) | autograd.grad batched, TF32 default | exact | "
              "ratio (gradient, exact) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, layers in cases:
            model = self.model(name)
            x = self.photo(model).to(self.device)
            for layer in layers:
                net = dv.Deconvnet(model)
                act = net.record(x, layer).activations[layer][0]
                features = list(range(act.shape[0] if not self.small else 16))
                ours = {}
                for method in ("deconvnet", "guided", "gradient"):
                    p = net.with_method(method)
                    ours[method], _ = self.timed(lambda p=p: p.project(x, layer, features=features))
                path = net.aliases[layer]
                captum = NeuronDeconvolution(model, model.get_submodule(path))
                sample = features[:: max(1, len(features) // 24)]

                def loop():
                    for f in sample:
                        flat = int(act[f].argmax())
                        captum.attribute(x, neuron_selector=(f, flat // act.shape[-1],
                                                             flat % act.shape[-1]))
                cap, _ = self.timed(loop, repeat=1)
                cap *= len(features) / len(sample)
                run = self.batched_grad(model, x, path, features)
                default_s, _ = self.timed(run, repeat=2)
                with computing("exact"):
                    exact_s, _ = self.timed(run, repeat=2)
                print(f"| {name} | {layer} | {len(features)} | {ours['deconvnet']:.3f} | "
                      f"{ours['guided']:.3f} | {ours['gradient']:.3f} | {cap:.2f} | "
                      f"{cap / ours['deconvnet']:.1f}x | {default_s:.3f} | {exact_s:.3f} | "
                      f"{exact_s / ours['gradient']:.2f}x |", flush=True)
                del run
                torch.cuda.empty_cache() if self.device.type == "cuda" else None

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
                        scans[precision] = dv.scan(model, folder, layers, top=9,
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
        result = dv.train("zfnet", folder, out, epochs=2 if self.small else 3, batch_size=batch,
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

    # -- 4. occlusion -----------------------------------------------------------------------
    def occlusion(self):
        dv, torch = self.dv, self.torch
        from captum.attr import Occlusion

        from deconvviz.engine.precision import computing

        size, stride = (16, 8) if self.small else (48, 8)
        print(f"\n## 4. Occlusion ({size}-px square, stride {stride}, batch 256), seconds\n")
        print("| model | positions | dv.occlusion (default) | incremental | plain | "
              "precision='tf32' | Captum, PyTorch's default flags (TF32) | Captum, exact flags "
              "| ratio (exact against exact) | ratio (default against Captum's default) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name in (["vgg16"] if self.small else ["vgg16", "resnet50"]):
            model = self.model(name)
            x = self.photo(model).to(self.device)
            ours = {}
            for label, kwargs in [("default", {}), ("incremental", {"incremental": True}),
                                  ("plain", {"incremental": False}),
                                  ("tf32", {"precision": "tf32"})]:
                ours[label], result = self.timed(
                    lambda kwargs=kwargs: dv.occlusion(model, x, size=size, stride=stride,
                                                       batch_size=256, **kwargs), repeat=2)
            target = int(result.targets[0]) if hasattr(result, "targets") else None
            occ = Occlusion(model)

            def captum():
                with torch.no_grad():
                    return occ.attribute(x, sliding_window_shapes=(3, size, size),
                                         strides=(3, stride, stride), target=target,
                                         perturbations_per_eval=256)
            theirs, _ = self.timed(captum, repeat=2)
            with computing("exact"):
                theirs_exact, _ = self.timed(captum, repeat=2)
            positions = result.probability.shape[-1] * result.probability.shape[-2]
            print(f"| {name} | {positions} | {ours['default']:.3f} | {ours['incremental']:.3f} "
                  f"| {ours['plain']:.3f} | {ours['tf32']:.3f} | {theirs:.3f} | "
                  f"{theirs_exact:.3f} | {theirs_exact / ours['default']:.2f}x | "
                  f"{theirs / ours['default']:.2f}x |", flush=True)

    # -- 5. the flags behind "exact" ------------------------------------------------------
    def flags(self):
        import contextlib

        import deconvviz.engine.precision as P

        torch, dv = self.torch, self.dv

        @contextlib.contextmanager
        def variant(deterministic, benchmark, cudnn=True):
            wanted, enabled = P._wanted, torch.backends.cudnn.enabled

            def patched(precision, caller):
                flags = list(wanted(precision, caller))
                if deterministic is not None:
                    flags[-2], flags[-1] = deterministic, benchmark
                return tuple(flags)
            P._wanted = patched
            torch.backends.cudnn.enabled = cudnn
            try:
                yield
            finally:
                P._wanted, torch.backends.cudnn.enabled = wanted, enabled

        variants = [("exact: deterministic, no autotuner", "exact", None, None, True),
                    ("float32, autotuner", "exact", False, True, True),
                    ("float32, cuDNN's default choice", "exact", False, False, True),
                    ("float32, no cuDNN (native)", "exact", None, None, False),
                    ("tf32", "tf32", None, None, True)]
        cases = [("vgg16", "conv5_3"), ("resnet50", "layer3")]
        if self.small:
            cases = [("vgg16", "conv3_3")]
        n_time = 8 if self.small else 64
        print(f"\n## 5. The flags behind 'exact': error (16 features) and seconds for "
              f"{n_time} features\n")
        print("| model | layer | variant | method | error | full-size s | cone s |")
        print("|---|---|---|---|---:|---:|---:|")
        for name, layer in cases:
            cpu_model = self.model(name, "cpu")
            x = self.photo(cpu_model)
            gpu_model = self.model(name)
            xg = x.to(self.device)
            for method in ("deconvnet", "gradient"):
                net_cpu = dv.Projector(cpu_model, method=method)
                feats = list(range(16))
                expected = self.oracle(cpu_model, x, net_cpu.aliases.get(layer, layer), feats,
                                       method)
                for label, precision, det, bench, cudnn in variants:
                    with variant(det, bench, cudnn):
                        net = dv.Projector(gpu_model, method=method, precision=precision)
                        err = self.rel(net.project(xg, layer, features=feats, cone=False)[0], expected)
                        many = list(range(n_time))
                        full, _ = self.timed(lambda: net.project(xg, layer, features=many, cone=False),
                                             repeat=2)
                        try:
                            cone, _ = self.timed(lambda: net.project(xg, layer, features=many,
                                                                     cone=True), repeat=2)
                        except Exception as e:  # noqa: BLE001
                            cone = float("nan")
                            print(f"(cone: {type(e).__name__}: {e})")
                    print(f"| {name} | {layer} | {label} | {method} | {err:.1e} | {full:.3f} | "
                          f"{cone:.3f} |", flush=True)


    # -- 6. feature visualisation -----------------------------------------------------------
    def featurevis(self):
        dv = self.dv
        model = self.model("vgg16")
        units = list(range(8 if self.small else 512))
        steps = 2 if self.small else self.args.fv_steps
        size = 64 if self.small else 224
        print(f"\n## 6. Feature visualisation: {len(units)} units of VGG16 conv5_3 at {size} px, "
              f"Lucid's defaults (128-px Fourier image, its transforms)\n")
        print("| precision | steps timed | seconds | per step | 512 steps (scaled) |")
        print("|---|---:|---:|---:|---:|")
        for precision in ("exact", "tf32"):
            from deconvviz.engine.precision import computing

            def run(steps):
                with computing(precision):
                    return dv.feature_vis(model, "conv5_3", units, steps=steps,
                                          input_size=size)
            run(1)  # warm-up: cuDNN's kernels, the probe of memory per image
            self.sync()
            start = time.perf_counter()
            run(steps)
            self.sync()
            took = time.perf_counter() - start
            print(f"| {precision} | {steps} | {took:.1f} | {took / steps:.3f} | "
                  f"{took / steps * 512:.0f} s |", flush=True)

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
