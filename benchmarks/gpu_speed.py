"""benchmarks/gpu.py's tables of speed: 2. projecting every feature of a layer; 4. occlusion;
6. feature visualisation."""
# ruff: noqa: B023  (the closures below are timed at once, inside the loop that binds them)
from __future__ import annotations

import time


class SpeedTables:
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
                    return dv.feature_vis(model, "conv5_3", features=units, steps=steps,
                                          input_size=size)
            run(1)  # warm-up: cuDNN's kernels, the probe of memory per image
            self.sync()
            start = time.perf_counter()
            run(steps)
            self.sync()
            took = time.perf_counter() - start
            print(f"| {precision} | {steps} | {took:.1f} | {took / steps:.3f} | "
                  f"{took / steps * 512:.0f} s |", flush=True)
