"""int8 lowering and its PyTorch reference (imported when an int8 model is built or checked: its
Relax mutator needs TVM at import).

Every convolution and linear layer with constant weights becomes an integer one: the input is
quantised per tensor (scale calibrated on training images), the weights per output channel
(symmetric), the product is accumulated in int32, then rescaled to float32.
"""

from __future__ import annotations

import numpy as np
from tvm.relax.expr_functor import PyExprMutator, mutator

from dlas_dse.lazy import lazy_import
from dlas_dse.stack.relax_util import is_op, rewrite_functions

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
F = lazy_import("torch.nn.functional")
tvm = lazy_import("tvm")
relax = lazy_import("tvm.relax")

INT8_MAX = 127


def _weight_names(model: nn.Module) -> dict[bytes, str]:
    """Module name of every conv/linear layer, keyed by its float32 weight bytes (both layouts for
    linear layers, whose weight Relax stores transposed)."""
    names = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach().float().numpy()
            names[weight.tobytes()] = name
            if weight.ndim == 2:
                names[np.ascontiguousarray(weight.T).tobytes()] = name
    return names


def quantize_weight(weight: np.ndarray, channel_axis: int, input_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 ``weight`` and the float32 factor (input scale x weight scale, per
    channel along ``channel_axis``) that turns an int32 product back into float. Computed in float64,
    by the compiler and the PyTorch reference alike: a scale one ulp apart flips roundings downstream."""
    weight = weight.astype(np.float64)
    reduce_axes = tuple(a for a in range(weight.ndim) if a != channel_axis)
    weight_scale = np.maximum(np.abs(weight).max(axis=reduce_axes, keepdims=True), 1e-12) / INT8_MAX
    quantized = np.clip(np.round(weight / weight_scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, (input_scale * weight_scale.reshape(-1)).astype(np.float32)


@mutator
class _QuantizeToInt8(PyExprMutator):
    """Rewrite conv2d / matmul with a constant weight into int8 x int8 → int32 plus a rescale."""

    def __init__(self, mod: tvm.IRModule, weight_names: dict[bytes, str], input_scales: dict[str, float]):
        super().__init__(mod)
        self.weight_names, self.input_scales = weight_names, input_scales
        self.quantized: list[str] = []
        self.kept_float: list[str] = []

    def _constant_weight(self, expr: relax.Expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        if isinstance(expr, tvm.ir.expr.GenericConst):
            return expr.value.numpy()
        if is_op(expr, "relax.permute_dims") and isinstance(expr.args[0], tvm.ir.expr.GenericConst):
            return np.ascontiguousarray(expr.args[0].value.numpy().T)
        return None

    def _quantize_input(self, data: relax.Expr, scale: float) -> relax.Expr:
        scaled = relax.op.round(relax.op.divide(data, relax.const(scale, "float32")))
        clipped = relax.op.clip(scaled, -INT8_MAX - 1, INT8_MAX)
        return relax.op.astype(clipped, "int8")

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        is_conv, is_matmul = is_op(call, "relax.nn.conv2d"), is_op(call, "relax.matmul")
        if not (is_conv or is_matmul):
            return call
        weight = self._constant_weight(call.args[1])
        name = self.weight_names.get(weight.tobytes()) if weight is not None else None
        if name is None or name not in self.input_scales:
            self.kept_float.append(name or "?")
            return call
        channel_axis = 0 if is_conv else 1  # OIHW for conv, (in, out) for the transposed linear
        quantized, rescale = quantize_weight(weight, channel_axis, self.input_scales[name])
        data = self._quantize_input(call.args[0], self.input_scales[name])
        if is_conv:
            attrs = call.attrs
            product = relax.op.nn.conv2d(data, relax.const(quantized), attrs.strides, attrs.padding,
                                         attrs.dilation, attrs.groups, attrs.data_layout,
                                         attrs.kernel_layout, attrs.out_layout, out_dtype="int32")
            rescale = rescale.reshape(1, -1, 1, 1)
        else:
            product = relax.op.matmul(data, relax.const(quantized), out_dtype="int32")
            rescale = rescale.reshape(1, -1)
        self.quantized.append(name)
        return relax.op.multiply(relax.op.astype(product, "float32"), relax.const(rescale))


def to_int8(mod: tvm.IRModule, model: nn.Module, calibration: dict) -> tuple[tvm.IRModule, dict]:
    """int8 convolutions and linear layers with int32 accumulation, from calibrated input scales
    (``calibration`` maps layer names of the BatchNorm-folded ``model`` to input scales)."""
    rewriter = _QuantizeToInt8(mod, _weight_names(model), calibration)
    mod = relax.transform.FoldConstant()(rewrite_functions(mod, rewriter))
    return mod, {"int8_layers": len(rewriter.quantized), "float_layers": len(rewriter.kept_float)}


class Int8Reference(nn.Module):
    """PyTorch reference of one int8 layer, step for step as the compiled module computes it:
    float32 quantisation of the input, exact integer products (float64), the same float32 weight
    factors (:func:`quantize_weight`), rescale and bias rounded once."""

    def __init__(self, layer: nn.Module, input_scale: float):
        super().__init__()
        self.layer = layer
        self.input_scale = torch.tensor(input_scale, dtype=torch.float32)
        quantized, rescale = quantize_weight(layer.weight.detach().float().numpy(), 0, input_scale)
        self.quantized, self.rescale = torch.from_numpy(quantized).double(), torch.from_numpy(rescale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(x.float() / self.input_scale), -INT8_MAX - 1, INT8_MAX).double()
        if isinstance(self.layer, nn.Conv2d):
            products = F.conv2d(q, self.quantized, None, self.layer.stride, self.layer.padding,
                                self.layer.dilation, self.layer.groups)
            shape = (1, -1, 1, 1)
        else:
            products, shape = q @ self.quantized.T, (1, -1)
        products, rescale = products.float(), self.rescale.reshape(shape)
        if self.layer.bias is None:
            return products * rescale
        # the compiler fuses rescale and bias into one kernel, where LLVM contracts them into a fused
        # multiply-add: one rounding, which float64 reproduces
        return (products.double() * rescale.double() + self.layer.bias.detach().double().reshape(shape)).float()


def int8_reference(model: nn.Module, calibration: dict) -> nn.Module:
    """The BatchNorm-folded ``model`` with every calibrated layer replaced by :class:`Int8Reference`."""
    for name, scale in calibration.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Reference(getattr(parent, child), scale))
    return model
