"""Leaves a secret in one kernel IPC object or keyring ("leave"), looks for it ("peek"),
or removes it ("clean"). Fixed keys and names: what an attacker's next request would use.

args: {"op": "leave" | "peek" | "clean", "channel": <one of CHANNELS>, "secret": str}
"""

import ctypes
import ctypes.util
import errno
import os
import platform

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.syscall.restype = ctypes.c_long
KEY = 0x52574E31  # a fixed SysV key
MQ_NAME = b"/rewind-attack"
IPC_CREAT, IPC_NOWAIT, IPC_RMID, GETVAL, SETVAL, SHM_RDONLY = 0o1000, 0o4000, 0, 12, 16, 0o10000
SYS = {
    "x86_64": {"add_key": 248, "request_key": 249, "keyctl": 250},
    "aarch64": {"add_key": 217, "request_key": 218, "keyctl": 219},
}[platform.machine()]
KEYRINGS = {"keyring_user": -4, "keyring_session": -3, "keyring_user_session": -5}
KEYCTL_SETPERM, KEYCTL_LINK, KEYCTL_SEARCH, KEYCTL_READ, KEYCTL_INVALIDATE = 5, 8, 10, 11, 21
CHANNELS = ("msg", "shm", "sem", "mq", *KEYRINGS)


class MsgBuf(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_char * 128)]


def fail(what):
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def possess(channel):
    """Link a per-user keyring into our session keyring: keys in it are then ours to
    read and to re-permission (possession), as the same user's next request may do."""
    if channel in ("keyring_user", "keyring_user_session"):
        libc.syscall(SYS["keyctl"], KEYCTL_LINK, KEYRINGS[channel], KEYRINGS["keyring_session"])


def leave(channel, secret):
    data = secret.encode()
    possess(channel)
    if channel == "msg":
        q = libc.msgget(KEY, IPC_CREAT | 0o600)
        msg = MsgBuf(1, data)
        if q < 0 or libc.msgsnd(q, ctypes.byref(msg), len(data), IPC_NOWAIT) != 0:
            fail("msgsnd")
    elif channel == "shm":
        shm = libc.shmget(KEY, 4096, IPC_CREAT | 0o600)
        addr = libc.shmat(shm, None, 0) if shm >= 0 else None
        if addr in (None, ctypes.c_void_p(-1).value):
            fail("shmat")
        ctypes.memmove(addr, data, len(data))
        libc.shmdt(ctypes.c_void_p(addr))
    elif channel == "sem":
        sem = libc.semget(KEY, 1, IPC_CREAT | 0o600)
        if sem < 0 or libc.semctl(sem, 0, SETVAL, ctypes.c_int(int(secret) % 30000)) != 0:
            fail("semctl SETVAL")
    elif channel == "mq":
        mqd = libc.mq_open(MQ_NAME, os.O_CREAT | os.O_RDWR, 0o600, None)
        if mqd < 0 or libc.mq_send(mqd, data, len(data), 0) != 0:
            fail("mq_send")
        libc.mq_close(mqd)
    else:
        key = libc.syscall(SYS["add_key"], b"user", b"rewind-attack", data, len(data),
                           KEYRINGS[channel])  # fmt: skip
        if key < 0 or libc.syscall(SYS["keyctl"], KEYCTL_SETPERM, key, 0x3F3F0000) != 0:
            fail("add_key")
    return {"left": True}


def peek(channel):
    """The secret if it is still there, else None; an error text if the call is refused."""
    try:
        if channel == "msg":
            q = libc.msgget(KEY, 0)
            if q < 0:
                return None
            msg = MsgBuf()
            n = libc.msgrcv(q, ctypes.byref(msg), 128, 0, IPC_NOWAIT)
            return msg.mtext[:n].decode() if n > 0 else ""
        if channel == "shm":
            shm = libc.shmget(KEY, 0, 0)
            if shm < 0:
                return None
            addr = libc.shmat(shm, None, SHM_RDONLY)
            value = ctypes.string_at(addr, 128).rstrip(b"\0").decode()
            libc.shmdt(ctypes.c_void_p(addr))
            return value
        if channel == "sem":
            sem = libc.semget(KEY, 0, 0)
            return None if sem < 0 else str(libc.semctl(sem, 0, GETVAL))
        if channel == "mq":
            mqd = libc.mq_open(MQ_NAME, os.O_RDONLY | os.O_NONBLOCK)
            if mqd < 0:
                return None
            buf = ctypes.create_string_buffer(8192)
            n = libc.mq_receive(mqd, buf, 8192, None)
            libc.mq_close(mqd)
            return buf.raw[:n].decode() if n > 0 else ""
        possess(channel)
        key = libc.syscall(SYS["keyctl"], KEYCTL_SEARCH, KEYRINGS[channel], b"user",
                           b"rewind-attack", 0)  # fmt: skip
        if key < 0:
            if ctypes.get_errno() in (errno.ENOKEY, errno.EKEYREVOKED, errno.EKEYEXPIRED):
                return None
            fail("keyctl SEARCH")
        buf = ctypes.create_string_buffer(128)
        n = libc.syscall(SYS["keyctl"], KEYCTL_READ, key, buf, 128)
        if n < 0:
            fail("keyctl READ")
        return buf.raw[:n].decode()
    except OSError as exc:
        return f"error: {exc}"


def clean(channel):
    if channel == "msg" and (q := libc.msgget(KEY, 0)) >= 0:
        libc.msgctl(q, IPC_RMID, None)
    elif channel == "shm" and (shm := libc.shmget(KEY, 0, 0)) >= 0:
        libc.shmctl(shm, IPC_RMID, None)
    elif channel == "sem" and (sem := libc.semget(KEY, 0, 0)) >= 0:
        libc.semctl(sem, 0, IPC_RMID)
    elif channel == "mq":
        libc.mq_unlink(MQ_NAME)
    elif channel in KEYRINGS:
        possess(channel)
        key = libc.syscall(SYS["keyctl"], KEYCTL_SEARCH, KEYRINGS[channel], b"user",
                           b"rewind-attack", 0)  # fmt: skip
        if key >= 0:
            libc.syscall(SYS["keyctl"], KEYCTL_INVALIDATE, key)
    return {"cleaned": True}


def probe_keys():
    """errno of each keyring syscall (0: allowed), on harmless arguments."""
    calls = {
        "add_key": (SYS["add_key"], b"user", b"rewind-probe", b"x", 1, KEYRINGS["keyring_session"]),
        "request_key": (SYS["request_key"], b"user", b"rewind-probe", None, 0),
        "keyctl": (SYS["keyctl"], 0, KEYRINGS["keyring_session"], 0),  # GET_KEYRING_ID
    }
    out = {}
    for name, call in calls.items():
        out[name] = 0 if libc.syscall(*call) >= 0 else ctypes.get_errno()
    return out


def main(args):
    if args.get("op") == "probe_keys":
        return probe_keys()
    op, channel = args.get("op", "peek"), args["channel"]
    if op == "leave":
        return leave(channel, args["secret"])
    if op == "clean":
        return clean(channel)
    return {"found": peek(channel), "uid": os.getuid()}
