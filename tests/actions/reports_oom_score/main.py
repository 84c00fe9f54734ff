"""Reports the out-of-memory score adjustment of its process and of its parent."""

import os


def adj(pid):
    with open(f"/proc/{pid}/oom_score_adj") as fh:
        return int(fh.read())


def main(args):
    return {"own": adj(os.getpid()), "parent": adj(os.getppid())}
