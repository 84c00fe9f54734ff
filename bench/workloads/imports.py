"""imports: a heavy-import action (sympy at module level) with a small symbolic task."""

import sympy

X = sympy.Symbol("x")


def main(args):
    n = int(args.get("n", 6))
    expr = sympy.expand((X + 1) ** n)
    return {"n": n, "terms": len(expr.args), "derivative_at_1": int(expr.diff(X).subs(X, 1))}
