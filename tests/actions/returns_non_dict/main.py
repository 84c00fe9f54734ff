def main(args):
    return "a string"
