def main(args):
    return {"rewind_status": "exited", "error": "not really", "ok": True}
