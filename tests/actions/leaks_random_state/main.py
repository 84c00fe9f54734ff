import random


def main(args):
    if "seed" in args:
        random.seed(args["seed"])
        return {"seeded": True}
    return {"draw": random.random()}
