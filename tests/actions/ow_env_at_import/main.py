# BasicActionRunnerTests "init env": /init's env is visible when the module is imported.
import os

SOME_VAR = os.environ.get("SOME_VAR")
ANOTHER_VAR = os.environ.get("ANOTHER_VAR")


def main(args):
    return {"SOME_VAR": SOME_VAR, "ANOTHER_VAR": ANOTHER_VAR}
