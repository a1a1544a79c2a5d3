"""The layer-4 Relax pass: every ``relax.nn.conv2d`` with a constant weight becomes a
``call_tir`` of the chosen algorithm's TE compute, in the chosen data layout."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tvm.relax.expr_functor import PyExprMutator, mutator

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import ALGORITHMS
from dlas_dse.stack.algorithms.conv import ConvSpec, spec_from_call, to_oihw
from dlas_dse.stack.algorithms.lowering import Lowering, NotApplicable
from dlas_dse.stack.relax_util import is_op, rewrite_functions, visit_functions

tvm = lazy_import("tvm")
relax = lazy_import("tvm.relax")

FALLBACK = "direct"
KERNEL_LAYOUTS = {"NCHW": "OIHW", "NHWC": "OHWI"}
"""The kernel layout that goes with each data layout a space may choose."""


def convolutions(mod: tvm.IRModule) -> list[relax.Call]:
    """Every ``relax.nn.conv2d`` call in the module's Relax functions."""
    calls: list[relax.Call] = []
    visit_functions(mod, lambda expr: calls.append(expr) if is_op(expr, "relax.nn.conv2d") else None)
    return calls


def lower_convolution(spec: ConvSpec, weight: np.ndarray, params: dict) -> tuple[Lowering, str | None]:
    """The requested algorithm's lowering of one convolution (OIHW ``weight``); where it does not
    apply, ``direct`` in the requested format, else dense ``direct``, with the reasons why."""
    reasons = []
    for attempt in (params, {**params, "conv": FALLBACK}, {**params, "conv": FALLBACK, "format": "dense"}):
        try:
            return ALGORITHMS.get(attempt["conv"]).function(spec, weight, attempt), "; ".join(reasons) or None
        except NotApplicable as reason:
            reasons.append(str(reason))
    raise AssertionError("dense direct applies to every convolution")


@mutator
class _ConvolutionRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, params: dict):
        super().__init__(mod)
        self.params = params
        self.used: list[dict] = []

    def _constant(self, expr: relax.Expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        return expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not is_op(call, "relax.nn.conv2d"):
            return call
        weight = self._constant(call.args[1])
        if weight is None:
            self.used.append({"algorithm": "relax", "reason": "weight is not a constant"})
            return call
        spec = spec_from_call(call, str(weight.dtype))
        lowering, reason = lower_convolution(spec, to_oihw(weight, str(call.attrs.kernel_layout)), self.params)
        self.used.append({"conv": spec.describe(), "algorithm": lowering.algorithm,
                          **({"fallback_reason": reason} if reason else {}),
                          **({"why": lowering.why} if lowering.why else {})})
        constants = [relax.const(c) for c in lowering.constants]
        return self.builder_.call_te(lowering.compute, call.args[0], *constants,
                                     primfunc_name_hint=f"conv2d_{lowering.algorithm}")


@mutator
class _ClipAsBounds(PyExprMutator):
    """``clip(x, low, high)`` as ``minimum(maximum(x, low), high)``: the same values, in operators
    that follow a changed layout (Relax infers none for clip, so that every ReLU6 of a model would
    otherwise sit between two layout transforms)."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not is_op(call, "relax.clip"):
            return call
        data, low, high = call.args
        dtype = str(data.ty.dtype)
        lower = self.builder_.emit(relax.op.maximum(data, relax.const(float(low.value), dtype)))
        return relax.op.minimum(lower, relax.const(float(high.value), dtype))


def convert_layout(mod: tvm.IRModule, params: dict) -> tvm.IRModule:
    """Every convolution in the layout of the layer-4 ``params``: an algorithm's own (its ``layouts``
    trait, e.g. nchwc's blocked channels), else ``layout``. Transposes are inserted only where a
    layout-sensitive operator needs another layout; weights are transposed at compile time."""
    own = ALGORITHMS.trait(params.get("conv", FALLBACK), "layouts")
    layout = params.get("layout", "NCHW")
    data, kernel = own(params) if own else (layout, KERNEL_LAYOUTS.get(layout))
    if data == "NCHW":
        return mod
    mod = rewrite_functions(mod, _ClipAsBounds(mod))
    converted = relax.transform.ConvertLayout({"relax.nn.conv2d": [data, kernel]})(mod)
    return relax.transform.FoldConstant()(converted)


def apply_algorithm(mod: tvm.IRModule, params: dict, target: tvm.target.Target | None = None,
                    kernel_times=None) -> tuple[tvm.IRModule, dict]:
    """Rewrite ``mod``'s convolutions with the layer-4 ``params`` (conv, layout, format and the
    algorithm's own) for ``target`` (an algorithm may use its instructions; ``auto`` measures
    kernels with ``kernel_times``, a :class:`~.auto.KernelTimes`); returns the module and a record
    of what each convolution used."""
    params = {**params, "target": target, "kernel_times": kernel_times}
    mod = convert_layout(mod, params)
    rewriter = _ConvolutionRewriter(mod, params)
    rewritten = relax.transform.DeadCodeElimination()(rewrite_functions(mod, rewriter))
    fallbacks = Counter(u["fallback_reason"] for u in rewriter.used if "fallback_reason" in u)
    return rewritten, {"convolutions_by_algorithm": dict(Counter(u["algorithm"] for u in rewriter.used)),
                       "algorithm_fallbacks": dict(fallbacks), "convolutions": rewriter.used}
