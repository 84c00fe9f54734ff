"""hello: a greeting; measures the runtime's own per-request cost."""


def main(args):
    return {"greeting": f"Hello {args.get('name', 'stranger')}!"}
