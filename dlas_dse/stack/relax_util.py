"""Small helpers over Relax modules shared by the layers that rewrite them."""

from __future__ import annotations

from typing import Callable

from dlas_dse.lazy import lazy_import

tvm = lazy_import("tvm")
relax = lazy_import("tvm.relax")


def is_op(expr: relax.Expr, name: str) -> bool:
    """Whether ``expr`` calls the Relax operator ``name`` (e.g. ``relax.nn.conv2d``)."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def visit_functions(mod: tvm.IRModule, visit: Callable[[relax.Expr], None]) -> None:
    """Call ``visit`` on every expression of ``mod``'s Relax functions (post-order)."""
    for function in mod.functions.values():
        if isinstance(function, relax.Function):
            relax.analysis.post_order_visit(function, visit)


def rewrite_functions(mod: tvm.IRModule, rewriter: relax.expr_functor.PyExprMutator) -> tvm.IRModule:
    """``mod`` with every Relax function passed through ``rewriter`` (PrimFuncs the rewriter adds
    through its block builder included)."""
    for global_var, function in mod.functions.items():
        if isinstance(function, relax.Function):
            rewriter.builder_.update_func(global_var, rewriter.visit_expr(function))
    return rewriter.builder_.get()
