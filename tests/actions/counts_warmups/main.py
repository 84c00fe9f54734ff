STATE = {"warm": 0, "runs": 0}


def main(args):
    if args.get("warmup"):
        STATE["warm"] += 1
        return {}
    STATE["runs"] += 1
    return dict(STATE)
