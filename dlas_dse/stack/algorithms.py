"""Layer 4, algorithms and data formats: a rewrite of the Relax module's convolutions."""

from __future__ import annotations

from collections import Counter

import tvm
from tvm import relax

from dlas_dse.registry import ALGORITHMS


def convolutions(mod: tvm.IRModule) -> list[relax.Call]:
    """Every ``relax.nn.conv2d`` call in the module's Relax functions."""
    calls: list[relax.Call] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.nn.conv2d":
            calls.append(expr)

    for function in mod.functions.values():
        if isinstance(function, relax.Function):
            relax.analysis.post_order_visit(function, visit)
    return calls


@ALGORITHMS.register("direct")
def direct(mod: tvm.IRModule, params: dict) -> tuple[tvm.IRModule, Counter]:
    """TVM's default conv2d lowering: a direct loop nest over the output tensor."""
    return mod, Counter(direct=len(convolutions(mod)))


def apply_algorithm(mod: tvm.IRModule, params: dict) -> tuple[tvm.IRModule, dict]:
    """Rewrite ``mod``'s convolutions with ``params["conv"]``; returns the module and how many
    convolutions each algorithm actually implements."""
    rewritten, used = ALGORITHMS.get(params["conv"]).function(mod, params)
    return rewritten, {"convolutions_by_algorithm": dict(used)}
