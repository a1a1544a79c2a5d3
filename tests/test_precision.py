"""Deployed number formats: int8 really computes in int8 with int32 accumulation, fp16 in half."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
import tvm.tirx
from tvm import relax

from dlas_dse.stack.algorithms import apply_algorithm, build_pipeline
from dlas_dse.stack.compilers import deployed_bytes, fold_batchnorm, reference_model, to_relax
from dlas_dse.stack.compression import calibrate_input_scales
from dlas_dse.stack.datasets import load_dataset
from dlas_dse.stack.devices import create_device
from dlas_dse.stack.models import build_model
from dlas_dse.stack.compression._int8_lowering import Int8Reference
from dlas_dse.stack.compression.precisions import precision


@pytest.fixture(scope="module")
def resnet():
    dataset = load_dataset({"name": "digits", "image_size": 32, "val_fraction": 0.2, "split_seed": 0})
    model = build_model({"architecture": "resnet18", "seed": 0}, dataset).eval()
    return model, dataset


def _prim_func_dtypes(mod: tvm.IRModule) -> list[tuple[str, list[str]]]:
    """(name, buffer dtypes) of every TIR function after legalisation."""
    legalized = relax.transform.LegalizeOps()(mod)
    return [(gv.name_hint, [str(param.ty.dtype) for param in func.params])
            for gv, func in legalized.functions.items() if isinstance(func, tvm.tirx.PrimFunc)]


def test_int8_convolutions_take_int8_and_accumulate_in_int32(resnet):
    model, dataset = resnet
    calibration = calibrate_input_scales(model, torch.from_numpy(dataset.train_x[:64]))
    folded = fold_batchnorm(model)
    mod, record = precision("int8").lower(to_relax(folded, (1, 3, 32, 32)), folded, calibration)
    assert record == {"int8_layers": 21, "float_layers": 0}  # 20 convolutions + the classifier
    convolutions = [dtypes for name, dtypes in _prim_func_dtypes(mod) if "conv2d" in name]
    assert len(convolutions) >= 5  # one function per distinct shape
    for dtypes in convolutions:  # data and weight int8, output int32: no float convolution left
        assert dtypes[:2] == ["int8", "int8"] and dtypes[-1] == "int32"
    weights = sum(p.numel() for n, p in folded.named_parameters() if n.endswith("weight"))
    biases = sum(p.numel() for n, p in folded.named_parameters() if n.endswith("bias"))
    channels = sum(m.weight.shape[0] for m in folded.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    # 1 byte per weight + a float32 rescale per output channel + float32 biases
    assert deployed_bytes(mod) == weights + 4 * channels + 4 * biases


@pytest.mark.parametrize("conv", [None, "nchwc"])
def test_int8_module_matches_its_reference_bit_for_bit(resnet, conv):
    """Same weight factors, same roundings: one ulp apart anywhere flips a rounding on some image,
    which then spreads through every later layer. Also with the whole model in channel blocks
    (requantisation, residual additions and pooling on blocked tensors)."""
    model, dataset = resnet
    calibration = calibrate_input_scales(model, torch.from_numpy(dataset.train_x[:64]))
    folded = fold_batchnorm(model)
    mod, _ = precision("int8").lower(to_relax(folded, (1, 3, 32, 32)), folded, calibration)
    target = create_device({"device": "host-cpu", "threads": 2}).tvm_target()  # with its FMA units
    if conv:
        mod, record = apply_algorithm(mod, {"conv": conv}, target)
        assert record["convolutions_by_algorithm"].get("nchwc", 0) + sum(
            n for name, n in record["convolutions_by_algorithm"].items() if name.startswith("nchwc_")) == 19
    machine = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=build_pipeline(target)), tvm.cpu())
    reference = reference_model(model, "int8", calibration)
    for image in dataset.val_x[:32]:
        compiled = machine["main"](tvm.runtime.tensor(image[None], tvm.cpu())).numpy()
        with torch.no_grad():
            np.testing.assert_array_equal(compiled, reference(torch.from_numpy(image[None])).numpy())


def test_int8_reference_is_integer_arithmetic():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(4, 6, 3, padding=1)
    reference = Int8Reference(layer, input_scale=0.05)
    assert torch.equal(reference.quantized, reference.quantized.round())
    assert reference.quantized.abs().max() == 127
    x = torch.randn(1, 4, 8, 8)
    error = (reference(x) - layer(x)).abs().max() / layer(x).abs().max()
    assert 0 < error < 0.05  # quantised, yet close to the float layer


def test_fp16_constants_are_half(resnet):
    model, _ = resnet
    folded = fold_batchnorm(model)
    mod32 = to_relax(folded, (1, 3, 32, 32))
    mod16, _ = precision("float16").lower(to_relax(folded, (1, 3, 32, 32)), folded, {})
    assert deployed_bytes(mod16) * 2 == deployed_bytes(mod32)
    convolutions = [dtypes for name, dtypes in _prim_func_dtypes(mod16) if "conv2d" in name]
    assert convolutions and all(dtypes == ["float16"] * 3 for dtypes in convolutions)
    assert [str(p.ty.dtype) for p in mod16["main"].params] == ["float32"]  # the boundary stays float32
