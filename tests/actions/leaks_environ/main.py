import ctypes
import os

libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p


def main(args):
    if "secret" in args:
        os.environ["LEAKED_SECRET"] = args["secret"]
        libc.setenv(b"LEAKED_C_SECRET", args["secret"].encode(), 1)
    c_value = libc.getenv(b"LEAKED_C_SECRET")
    return {
        "python": os.environ.get("LEAKED_SECRET"),
        "c": c_value.decode() if c_value else None,
        "api_key": os.environ.get("__OW_API_KEY"),
    }
