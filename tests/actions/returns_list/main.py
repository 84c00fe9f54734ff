def main(args):
    return [args, {"n": 1}]
