"""Makes a SysV message queue at import (so it exists at the checkpoint); a request with
a "secret" sends it there. Every request reports how many messages are queued."""

import ctypes
import ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
IPC_CREAT, IPC_NOWAIT, IPC_STAT = 0o1000, 0o4000, 2
QUEUE = libc.msgget(0x52574E32, IPC_CREAT | 0o600)


class MsgBuf(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_char * 128)]


def queued():
    with open("/proc/sysvipc/msg") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if int(fields[1]) == QUEUE:
                return int(fields[4])
    return -1


def main(args):
    before = queued()
    if "secret" in args:
        data = args["secret"].encode()
        libc.msgsnd(QUEUE, ctypes.byref(MsgBuf(1, data)), len(data), IPC_NOWAIT)
    return {"queued": before}
