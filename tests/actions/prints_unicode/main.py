def main(args):
    text = args.get("delimiter", "☃")
    print(f"{text} ✓ ünïcödé")
    return {"winter": f"{text} ❄ {text}"}
