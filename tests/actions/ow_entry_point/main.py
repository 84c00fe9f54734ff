# BasicActionRunnerTests "non-default entry point": main is "niam".
def niam(args):
    return {"result": "it works"}
