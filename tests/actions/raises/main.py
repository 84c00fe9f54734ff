def helper():
    raise ValueError("nope")


def main(args):
    helper()
