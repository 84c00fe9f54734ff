"""The classic first action: greets the caller."""


def main(args):
    name = args.get("name", "stranger")
    print(f"greeting {name}")
    return {"greeting": f"Hello {name}!"}
