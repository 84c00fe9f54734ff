"""graph: BFS, PageRank and a minimum spanning tree on a generated graph (networkx)."""

import random

import networkx as nx
import scipy.sparse  # noqa: F401  (PageRank's backend: imported here, not during a request)


def main(args):
    n = int(args.get("n", 1000))
    degree = int(args.get("degree", 4))
    seed = int(args.get("seed", 1))
    g = nx.barabasi_albert_graph(n, max(1, degree // 2), seed=seed)
    rng = random.Random(seed)
    for u, v in g.edges():
        g[u][v]["weight"] = rng.random()
    bfs = sum(1 for _ in nx.bfs_edges(g, 0))
    rank = nx.pagerank(g)
    mst = nx.minimum_spanning_tree(g)
    top = max(rank, key=rank.get)
    return {"n": n, "bfs_edges": bfs, "top": top, "mst_weight": mst.size(weight="weight")}
