import threading
import time

SECRET_HOLDER = threading.Thread(target=lambda: time.sleep(3600), daemon=True)
SECRET_HOLDER.start()
SEEN = []


def main(args):
    SEEN.append(1)
    return {"seen": len(SEEN), "threads": threading.active_count()}
