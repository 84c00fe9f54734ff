import uuid

TOKEN = uuid.uuid4().hex
print("imported once", TOKEN, flush=True)


def main(args):
    return {"token": TOKEN}
