"""A Redis-style client connected at import (to the test's server at $KV_PORT).

``{"get": KEY, "timeout": S}`` sends ``GET KEY`` and waits S seconds for the reply line.
With ``"reconnect": true`` a closed connection is opened again (in this request) and
the command retried, as a client that reconnects on EOF does.
"""

import os
import socket

ADDR = ("127.0.0.1", int(os.environ["KV_PORT"]))
CONN = socket.create_connection(ADDR)  # opened at import: shared by every request


def ask(conn, key, timeout):
    conn.settimeout(timeout)
    conn.sendall(f"GET {key}\n".encode())
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        reply += chunk
    return reply.decode().strip()


def main(args):
    global CONN
    out = {}
    try:
        out["value"] = ask(CONN, args["get"], args.get("timeout", 2.0))
    except TimeoutError:
        return {"timeout": True}
    except OSError as exc:  # EOF, reset or EPIPE: the connection is closed
        out["closed"] = type(exc).__name__
        if not args.get("reconnect"):
            return out
        CONN = socket.create_connection(ADDR)
        out["value"] = ask(CONN, args["get"], args.get("timeout", 2.0))
    return out
