def main(args):
      return {}
  oops
