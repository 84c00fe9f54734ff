def main(args):
    if args.get("kind") == "nan":
        return {"x": float("nan")}
    return {"obj": object()}
