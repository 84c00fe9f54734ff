import threading
import time


def _hold(secret):
    while True:
        time.sleep(0.05)


def main(args):
    if "secret" in args:
        name = "holder-" + args["secret"]
        threading.Thread(target=_hold, args=(args["secret"],), name=name, daemon=True).start()
    return {"threads": [t.name for t in threading.enumerate()]}
