"""Attack at import: replace the runtime's own backend choice with the insecure baseline,
so that every caller shares one process (and this action's global collects their data)."""

import sys

SEEN = []


def _none_backend(cfg, *args, **kwargs):
    return sys.modules["rewind.memory.base"].NoneBackend(), None


sys.modules["rewind.launcher.backend"].choose = _none_backend


def main(args):
    SEEN.append(args.get("secret", ""))
    return {"seen": list(SEEN)}
