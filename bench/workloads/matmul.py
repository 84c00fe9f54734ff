"""matmul: numpy matrix multiplication of two n x n random matrices."""

import numpy as np


def main(args):
    n = int(args.get("n", 128))
    rng = np.random.default_rng(int(args.get("seed", 1)))
    a = rng.random((n, n))
    b = rng.random((n, n))
    c = a @ b
    return {"n": n, "trace": float(np.trace(c))}
