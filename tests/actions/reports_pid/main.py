"""Returns the id of the process that ran the request (one worker under inplace)."""

import os


def main(args):
    return {"pid": os.getpid()}
