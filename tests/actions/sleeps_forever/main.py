import time


def main(args):
    if args.get("sleep"):
        time.sleep(float(args["sleep"]))
    return {"slept": args.get("sleep", 0)}
