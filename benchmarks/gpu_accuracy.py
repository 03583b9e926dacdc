"""benchmarks/gpu.py's tables of accuracy: 1. agreement with a float64 oracle; 5. the flags
behind precision="exact" (error and time under each variant of cuDNN's settings)."""
# ruff: noqa: B023  (the closures below are timed at once, inside the loop that binds them)
from __future__ import annotations


class AccuracyTables:
    # -- 1. agreement with a float64 oracle -----------------------------------------------
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
