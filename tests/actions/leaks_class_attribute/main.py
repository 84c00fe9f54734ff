class Cache:
    items: dict = {}


def main(args):
    if "secret" in args:
        Cache.items["last"] = args["secret"]
        Cache.token = args["secret"]
    return {"items": Cache.items, "token": getattr(Cache, "token", None)}
