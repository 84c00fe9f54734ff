def greeting(name):
    return f"Hello from a zip, {name}!"
