# BasicActionRunnerTests "echo": returns its arguments, prints one line per stream.
import sys


def main(args):
    print("hello stdout")
    print("hello stderr", file=sys.stderr)
    return args
