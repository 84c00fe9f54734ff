from helper import greeting


def niam(args):
    return {"greeting": greeting(args.get("name", "stranger"))}
