"""linpack: solve a dense n x n linear system with numpy (LAPACK gesv), as LINPACK does."""

import numpy as np


def main(args):
    n = int(args.get("n", 200))
    rng = np.random.default_rng(int(args.get("seed", 1)))
    a = rng.random((n, n))
    b = rng.random(n)
    x = np.linalg.solve(a, b)
    residual = float(np.linalg.norm(a @ x - b))
    # LINPACK's operation count for one solve: 2/3 n^3 + 2 n^2.
    return {"n": n, "residual": residual, "flops": 2 * n**3 / 3 + 2 * n**2}
