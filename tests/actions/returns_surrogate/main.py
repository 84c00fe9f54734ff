def main(args):
    return {"text": "a\ud800b", "ok": "é"}
