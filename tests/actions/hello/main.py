def main(args):
    name = args.get("name", "stranger")
    print(f"hello {name}")
    return {"greeting": f"Hello {name}!"}
