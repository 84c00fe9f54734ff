# BasicActionRunnerTests "activation context": __OW_API_HOST of the container, and
# the context keys of /run as __OW_<KEY>.
import os

KEYS = ("API_HOST", "API_KEY", "NAMESPACE", "ACTION_NAME", "ACTION_VERSION", "ACTIVATION_ID")


def main(args):
    return {key.lower(): os.environ.get("__OW_" + key) for key in (*KEYS, "DEADLINE")}
