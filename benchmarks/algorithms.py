"""Layer 4 on this machine: untuned latency of every convolution algorithm × layout, dense vs
sparse, and per-layer GFLOP/s — side by side in one run.

ResNet-18 at 32×32 with the CIFAR stem (random weights; BatchNorm folded), batch 1, on host-cpu:
1. whole model, every algorithm × layout with the project's default schedules (`auto`, which
   picks among them per convolution, is in systems.py); peers in the same
   run: ONNX Runtime, PyTorch eager, and TVM without a default schedule (plain loops);
2. dense vs sparse (CSR) for direct, gemm and spatial_pack at sparsities 0.5 / 0.8 / 0.9 / 0.95
   (each convolution magnitude-pruned to the sparsity), and the sparsity where sparse first wins;
3. per layer: latency and GFLOP/s of every distinct convolution for every variant (the three
   largest convolutions are printed).
Every compiled model is checked against PyTorch before it is timed; a variant that fails is
recorded with its reason and the others go on.

    python benchmarks/algorithms.py [--threads 2] [--min-time 1.0] [--skip-plain]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT, ResultsFile, median_ms, random_model, succeeded

import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from dlas_dse.stack.algorithms import apply_algorithm, convolutions, build_pipeline  # noqa: E402
from dlas_dse.stack.algorithms.auto import candidates  # noqa: E402
from dlas_dse.stack.algorithms.conv import conv_module, spec_from_call  # noqa: E402
from dlas_dse.stack.compilers import fold_batchnorm, to_relax  # noqa: E402
from dlas_dse.stack.devices import create_device  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.9, 0.95)
SPARSE_ALGORITHMS = ("direct", "gemm", "spatial_pack")
SHAPE = (1, 3, 32, 32)


def resnet18(sparsity: float = 0.0) -> torch.nn.Module:
    """ResNet-18 (CIFAR stem) with random weights, BatchNorm folded, every convolution
    magnitude-pruned to ``sparsity``."""
    model = fold_batchnorm(random_model("resnet18"))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and sparsity > 0:
                threshold = module.weight.abs().flatten().kthvalue(int(sparsity * module.weight.numel())).values
                module.weight[module.weight.abs() <= threshold] = 0.0
    return model


class Timer:
    """The project's latency protocol with this run's minimum measured time."""

    def __init__(self, min_time_s: float):
        self.min_time_s = min_time_s

    def vm(self, vm: relax.VirtualMachine, function: str, data: np.ndarray) -> float:
        """Median milliseconds of ``vm[function](data)``."""
        timer = vm.time_evaluator(function, tvm.cpu(), number=1, repeat=1)
        argument = tvm.runtime.tensor(data)
        return self.runs(lambda n: [timer(argument).results[0] for _ in range(n)])

    def runs(self, time_runs) -> float:
        return median_ms(time_runs, self.min_time_s)


def build(mod: tvm.IRModule, scheduled: bool = True) -> relax.VirtualMachine:
    target = create_device({"device": "host-cpu", "threads": 1}).tvm_target()
    pipeline = build_pipeline(target) if scheduled else "default"
    return relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=pipeline), tvm.cpu())


def run_model(model: torch.nn.Module, params: dict | None, timer: Timer, scheduled: bool = True) -> dict:
    """Compile ``model`` with the layer-4 ``params``, check it against PyTorch, time it."""
    images = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images).numpy()
    mod = to_relax(model, SHAPE)
    record = {}
    if params is not None:
        mod, record = apply_algorithm(mod, params)
    vm = build(mod, scheduled)
    out = vm["main"](tvm.runtime.tensor(images.numpy()))
    logits = (out[0] if not hasattr(out, "numpy") else out).numpy()
    error = float(np.abs(logits - expected).max() / np.abs(expected).max())
    assert error < 1e-3, f"{params}: relative error {error} against PyTorch"
    return {"latency_ms": timer.vm(vm, "main", images.numpy()), "relative_error": error,
            "convolutions_by_algorithm": record.get("convolutions_by_algorithm", {})}


def peers(timer: Timer, threads: int) -> dict:
    """ONNX Runtime and PyTorch eager on the same model and input."""
    import onnxruntime

    model, images = resnet18(), torch.randn(SHAPE)
    torch.set_num_threads(threads)
    with torch.inference_mode():
        eager = timer.runs(lambda n: [_seconds(lambda: model(images)) for _ in range(n)])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet18.onnx"
        torch.onnx.export(model, (images,), str(path), dynamo=True, verbose=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.numpy()}
    return {"onnxruntime": timer.runs(lambda n: [_seconds(lambda: session.run(None, feed)) for _ in range(n)]),
            "pytorch_eager": eager}


def _seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def layer_specs() -> tuple[list, list[np.ndarray], list[np.ndarray]]:
    """Each distinct ResNet-18 convolution with random dense weights and the same pruned to 0.9."""
    specs = list(dict.fromkeys(spec_from_call(c, "float32") for c in convolutions(to_relax(resnet18(), SHAPE))))
    rng = np.random.default_rng(0)
    dense = [rng.standard_normal((s.out_channels, s.in_per_group, s.kernel_h, s.kernel_w)).astype(np.float32)
             for s in specs]
    return specs, dense, [w * (rng.random(w.shape) >= 0.9) for w in dense]


def per_layer(params: dict, layers: tuple, timer: Timer) -> dict:
    """Latency and GFLOP/s of each distinct convolution of ``layers`` (:func:`layer_specs`) under
    one variant (sparse variants on the pruned weights): convolution → row."""
    specs, dense, pruned = layers
    mod, record = apply_algorithm(conv_module(specs, pruned if params["format"] == "sparse" else dense), params)
    vm = build(mod)
    rng, rows = np.random.default_rng(1), {}
    for index, (spec, used) in enumerate(zip(specs, record["convolutions"])):
        data = rng.standard_normal((spec.batch, spec.in_channels, spec.height, spec.width)).astype(np.float32)
        ms = timer.vm(vm, f"conv{index}", data)
        rows[spec.describe()] = {"macs": spec.macs, "ms": ms, "gflops": 2 * spec.macs / ms / 1e6,
                                 "algorithm": used["algorithm"]}
    return rows


def sparse_row(sparsity: float, conv: str, dense: dict, timer: Timer) -> dict:
    """The sparse variant of ``conv`` at ``sparsity`` beside its dense latency (where measured)."""
    row = run_model(resnet18(sparsity), {"conv": conv, "layout": "NCHW", "format": "sparse"}, timer)
    row["dense_ms"] = dense.get(f"{conv} NCHW", {}).get("latency_ms")
    print(f"sparse {conv:<13} {sparsity:4.2f}  {row['latency_ms']:8.2f} ms  (dense {row['dense_ms']} ms)",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per measurement")
    parser.add_argument("--skip-plain", action="store_true", help="skip TVM without default schedules (slow)")
    args = parser.parse_args()
    create_device({"device": "host-cpu", "threads": args.threads}).configure_runtime()
    timer = Timer(args.min_time)

    results: dict = {"peers": peers(timer, args.threads), "dense": {}, "sparse": {}, "per_layer": {}}
    out = ResultsFile("algorithms", results, args.threads)
    print(f"ONNX Runtime {results['peers']['onnxruntime']:.2f} ms, PyTorch eager "
          f"{results['peers']['pytorch_eager']:.2f} ms (measured again at the end)", flush=True)
    if not args.skip_plain:
        out.attempt(results["peers"], "tvm_without_default_schedules",
                    functools.partial(run_model, resnet18(), None, timer, scheduled=False))
    model = resnet18()
    for conv in candidates():
        for layout in ("NCHW", "NHWC"):
            row = out.attempt(results["dense"], f"{conv} {layout}", functools.partial(
                run_model, model, {"conv": conv, "layout": layout, "format": "dense"}, timer))
            if "failed" not in row:
                print(f"dense {conv:<13} {layout}  {row['latency_ms']:8.2f} ms  {row['convolutions_by_algorithm']}",
                      flush=True)
    for sparsity in SPARSITIES:
        for conv in SPARSE_ALGORITHMS:
            out.attempt(results["sparse"], f"{conv} {sparsity}",
                        functools.partial(sparse_row, sparsity, conv, results["dense"], timer))
    sparse = succeeded(results["sparse"])
    results["sparse_first_wins_at"] = {
        conv: next((s for s in SPARSITIES if f"{conv} {s}" in sparse and sparse[f"{conv} {s}"]["dense_ms"]
                    and sparse[f"{conv} {s}"]["latency_ms"] < sparse[f"{conv} {s}"]["dense_ms"]), None)
        for conv in SPARSE_ALGORITHMS}
    variants = {f"{conv} {layout}": {"conv": conv, "layout": layout, "format": "dense"}
                for conv in candidates() for layout in ("NCHW", "NHWC")}
    variants.update({f"sparse_{conv} 0.9": {"conv": conv, "layout": "NCHW", "format": "sparse"}
                     for conv in SPARSE_ALGORITHMS})
    layers = layer_specs()
    for name, params in variants.items():
        out.attempt(results["per_layer"], name, functools.partial(per_layer, params, layers, timer))
    again = peers(timer, args.threads)  # the machine is shared: the peers once more, keep the faster
    results["peers_first_and_last"] = {name: [results["peers"][name], again[name]] for name in again}
    results["peers"].update({name: min(results["peers"][name], again[name]) for name in again})
    dense = succeeded(results["dense"])
    for row in dense.values():
        row["vs_onnxruntime"] = row["latency_ms"] / results["peers"]["onnxruntime"]
    measured = succeeded(results["per_layer"])
    print("\nthe three largest convolutions (GFLOP/s):")
    for conv, _ in sorted(next(iter(measured.values()), {}).items(), key=lambda item: -item[1]["macs"])[:3]:
        print(f"  {conv:<40} " + "  ".join(f"{name} {rows[conv]['gflops']:.1f}" for name, rows in measured.items()))
    results["model"] = "resnet18 32x32 CIFAR stem, batch 1"
    path = out.save()
    print(f"ONNX Runtime {results['peers']['onnxruntime']:.2f} ms (faster of two runs); dense vs ONNX Runtime: "
          + ", ".join(f"{name} {row['vs_onnxruntime']:.1f}x" for name, row in dense.items()))
    print(f"sparse first beats dense at: {results['sparse_first_wins_at']}\nsaved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
