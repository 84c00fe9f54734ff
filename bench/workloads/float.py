"""float: a pure-Python math loop over n values."""

import math


def main(args):
    n = int(args.get("n", 20000))
    total = 0.0
    for i in range(n):
        x = float(i)
        total += math.sin(x) * math.cos(x) + math.sqrt(x)
    return {"n": n, "total": total}
