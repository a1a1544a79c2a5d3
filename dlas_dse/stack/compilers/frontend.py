"""From a PyTorch model to Relax, and what a Relax module weighs: BatchNorm folded, torch.export
into Relax, deployed bytes and MACs (shared by every compiler's build record)."""

from __future__ import annotations

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.stack.relax_util import visit_functions

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
tvm = lazy_import("tvm")
fx_optimization = lazy_import("torch.fx.experimental.optimization")
relax = lazy_import("tvm.relax")
torch_frontend = lazy_import("tvm.relax.frontend.torch")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the preceding convolution (inference only)."""
    return fx_optimization.fuse(model.eval())


def to_relax(model: nn.Module, input_shape: tuple[int, ...]) -> tvm.IRModule:
    """Import ``model`` at a static input shape (in its parameters' dtype) into a Relax module
    with constant weights."""
    example = torch.zeros(input_shape, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        program = torch.export.export(fold_batchnorm(model), (example,))
    return torch_frontend.from_exported_program(program, keep_params_as_input=False, unwrap_unit_return_tuple=True)


def deployed_bytes(mod: tvm.IRModule) -> int:
    """Bytes of the constant tensors (weights, biases) the module deploys, in their stored dtypes
    (scalar constants such as a ReLU6 bound are not parameters and not counted)."""
    total = 0

    def visit(expr: relax.Expr) -> None:
        nonlocal total
        if isinstance(expr, tvm.ir.expr.GenericConst) and len(expr.value.shape):
            total += expr.value.numpy().nbytes

    visit_functions(mod, visit)
    return total


def _shape(expr: relax.Expr) -> list[int]:
    if isinstance(expr, tvm.ir.expr.GenericConst):
        return list(expr.value.shape)
    return [int(d) for d in expr.ty.shape]


def count_macs(mod: tvm.IRModule) -> int:
    """Multiply-accumulates of the module's convolutions and matrix multiplications."""
    total = 0

    def visit(expr: relax.Expr) -> None:
        nonlocal total
        if not (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)):
            return
        if expr.op.name == "relax.nn.conv2d":
            _, in_per_group, kernel_h, kernel_w = _shape(expr.args[1])
            total += int(np.prod(_shape(expr))) * in_per_group * kernel_h * kernel_w
        elif expr.op.name == "relax.matmul":
            total += int(np.prod(_shape(expr))) * _shape(expr.args[0])[-1]

    visit_functions(mod, visit)
    return total


