SEEN = []


def main(args):
    SEEN.append(args.get("secret"))
    return {"seen": SEEN}
