"""Post-training int8 quantisation: the technique (calibration of the input scales) and the number
format it deploys in (the Relax lowering and its PyTorch reference, in ``_int8_lowering``)."""

from __future__ import annotations

import hashlib

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPRESSIONS, Param
from dlas_dse.stack.compression.base import FineTune
from dlas_dse.stack.compression.precisions import PRECISIONS, Precision
from dlas_dse.stack.datasets import Dataset

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
lowering = lazy_import("dlas_dse.stack.compression._int8_lowering")


def calibrate_input_scales(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Per-tensor symmetric int8 scale (max |input| / 127) of every conv and linear layer's input."""
    peaks: dict[str, float] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def record(_module, inputs, _output, name=name):
                peaks[name] = max(peaks.get(name, 0.0), float(inputs[0].detach().abs().max()))
            hooks.append(module.register_forward_hook(record))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    for hook in hooks:
        hook.remove()
    return {name: max(peak, 1e-8) / 127 for name, peak in peaks.items()}


@COMPRESSIONS.register(
    "int8", traits={"weight_bits": 8, "training_images": lambda p: f"calibrates on {p['calibration_images']} of them"}, calibration_images=Param(int, default=512, low=1, high=100000,
                                     help="training images whose activation ranges set the input scales"))
def int8(model: nn.Module, dataset: Dataset, params: dict, fine_tune: FineTune) -> tuple[nn.Module, dict]:
    """Post-training int8 quantisation: per-channel symmetric weights, per-tensor activations
    calibrated on training images; the deployed module computes int8 x int8 with int32 accumulation."""
    images = dataset.calibration_images(params["calibration_images"])
    # The compiled module is checked against an int8 PyTorch reference of the same arithmetic, which
    # it matches bit for bit on host-cpu. Where float rounding differs (a schedule that does not
    # contract rescale and bias into one multiply-add, the summation order of a pooling), an input
    # lands on the other side of a rounding boundary and the flip propagates through later layers:
    # hence 5% of the largest logit. A wrong kernel is off by ~100%.
    return model, {"precision": "int8", "calibration": calibrate_input_scales(model, torch.from_numpy(images)),
                   "calibration_split": "train", "calibration_samples": len(images),
                   "calibration_digest": hashlib.sha256(images.tobytes()).hexdigest()[:16], "tolerance": 5e-2}


@PRECISIONS.register("int8")
def int8_precision() -> Precision:
    """int8 x int8 -> int32 convolutions and linear layers, rescaled to float32; the reference
    computes the same arithmetic in PyTorch."""
    return Precision(lowering.to_int8, lowering.int8_reference)
