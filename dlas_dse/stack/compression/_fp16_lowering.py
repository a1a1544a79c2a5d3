"""float16 lowering (imported when a float16 model is built: its Relax mutator needs TVM at import)."""

from __future__ import annotations

from tvm.relax.expr_functor import PyExprMutator, mutator

from dlas_dse.lazy import lazy_import
from dlas_dse.stack.relax_util import is_op, rewrite_functions

nn = lazy_import("torch.nn")
tvm = lazy_import("tvm")
relax = lazy_import("tvm.relax")


@mutator
class _ClipAsMinMax(PyExprMutator):
    """``clip(x, a, b)`` (float64 scalar bounds) → ``minimum(maximum(x, a), b)`` in x's dtype."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if is_op(call, "relax.clip"):
            data, low, high = call.args
            dtype = data.ty.dtype
            return relax.op.minimum(relax.op.maximum(data, relax.const(float(low.value), dtype)),
                                    relax.const(float(high.value), dtype))
        return call


def to_float16(mod: tvm.IRModule, model: nn.Module, calibration: dict) -> tuple[tvm.IRModule, dict]:
    """Weights and activations in float16 (input and output stay float32 at the boundary)."""
    mod = relax.transform.ToMixedPrecision(out_dtype="float16")(rewrite_functions(mod, _ClipAsMinMax(mod)))
    return relax.transform.FoldConstant()(mod), {}
