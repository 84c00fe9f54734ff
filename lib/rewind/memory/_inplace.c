/*
 * rewind.memory._inplace: rewind a request process in place, from outside it.
 *
 * The request process (the worker) runs action code, so nothing inside it is trusted
 * once a request has started: the rewind is done by its parent, the snapshot process,
 * which never runs action code, through ptrace, /proc/PID/mem and PAGEMAP_SCAN.
 *
 * Worker side, before its first request (trusted code):
 *   track()  registers every private mapping with a userfaultfd in WP_ASYNC mode, so
 *            the kernel records which pages are written from then on.
 * Snapshot-process side, one Checkpoint object per worker:
 *   capture(pid, gate_fd, uffd)  seizes the worker while it is blocked reading its gate
 *            pipe (the checkpoint), saves its registers, descriptors, signal
 *            dispositions, mask, umask, cwd, brk, mapping list and per-process kernel
 *            state, copies its writable memory into a backup, write-protects everything
 *            and lets it go.
 *   stop()   after a request: stops the worker, refuses a worker with threads, kills
 *            its children. Done before the reply, so nothing of the request runs on.
 *   rewind() after the reply: checks the worker against the checkpoint (first what no
 *            rewind may put back, such as a new seccomp filter, before anything is
 *            injected), puts per-process kernel state back, makes the kernel-side state
 *            equal again by injecting system calls, copies the written pages back,
 *            puts the registers back so the worker re-enters its gate read, and detaches.
 *   Anything a rewind cannot put back exactly raises Refused(reason): the caller then
 *   kills the worker and starts a new one from the snapshot (fail closed, never open).
 *
 * This file holds the Python bindings only; _inplace.h lists the other source files.
 * x86-64 Linux >= 6.7 (WP_ASYNC, PAGEMAP_SCAN) only.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_inplace.h"

static PyObject *Refused; /* the exception class _inplace.Refused */

static PyObject *os_error(int err, const char *what) {
    PyObject *v = Py_BuildValue("(is)", err, what);
    if (v) {
        PyErr_SetObject(PyExc_OSError, v);
        Py_DECREF(v);
    }
    return NULL;
}

static PyObject *py_probe(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    int err = 0;
    const char *why = track_probe(&err);
    if (why)
        return PyUnicode_FromFormat("%s failed (%s)", why, strerror(err));
    Py_RETURN_NONE;
}

static PyObject *py_track(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    const char *what = NULL;
    int fd = track_self(&what);
    if (fd < 0)
        return os_error(-fd, what);
    return PyLong_FromLong(fd);
}

static PyObject *py_drain(PyObject *self, PyObject *args) {
    (void)self;
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    /* Read whatever is in the worker's status pipe into a buffer that is wiped: the
     * action can write there, and this process keeps no request bytes. Returns the
     * first byte's meaning only. */
    char buf[4096];
    int first = -1;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    /* The worker is stopped: whatever it wrote is in the pipe now. poll() first keeps
     * the pipe blocking for the "started" record without a flag flip per request. */
    while (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN)) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (first < 0)
            first = (unsigned char)buf[0];
    }
    memset(buf, 0, sizeof buf);
    __asm__ __volatile__("" : : "r"(buf) : "memory");
    if (first == 'D')
        return PyUnicode_FromString("done");
    if (first == 'X')
        return PyUnicode_FromString("exited");
    if (first < 0)
        return PyUnicode_FromString("none");
    return PyUnicode_FromString("other");
}

/* ---- Checkpoint --------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD struct ckpt *c; /* NULL before capture() and after release() */
    pid_t owner;                  /* the snapshot process: a forked child has no copy of *c */
} Checkpoint;

static void ckpt_release(Checkpoint *self) {
    if (self->c && getpid() == self->owner)
        ckpt_free(self->c);
    self->c = NULL;
}

static void Checkpoint_dealloc(PyObject *self) {
    ckpt_release((Checkpoint *)self);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *Checkpoint_capture(PyObject *op, PyObject *args) {
    Checkpoint *self = (Checkpoint *)op;
    int pid, gate_fd, uffd;
    if (!PyArg_ParseTuple(args, "iii", &pid, &gate_fd, &uffd))
        return NULL;
    ckpt_release(self);
    double t0 = now_ms();
    const char *what = NULL;
    int rc = ckpt_capture(pid, gate_fd, uffd, &self->c, &what);
    if (rc < 0)
        return os_error(-rc, what);
    self->owner = getpid();
    struct ckpt *c = self->c;
    return Py_BuildValue("{s:i,s:i,s:i,s:n,s:d}", "regions", c->nregions, "tracked",
                         ckpt_tracked(c), "units", c->nunits, "backup_bytes",
                         (Py_ssize_t)c->backup_len, "ms", now_ms() - t0);
}

static PyObject *refuse(const char *why) {
    PyErr_SetString(Refused, why);
    return NULL;
}

static PyObject *Checkpoint_stop(PyObject *op, PyObject *unused) {
    (void)unused;
    Checkpoint *self = (Checkpoint *)op;
    if (!self->c)
        return os_error(EINVAL, "stop() without a checkpoint");
    const char *why = ckpt_stop(self->c);
    return why ? refuse(why) : Py_NewRef(Py_None);
}

static PyObject *Checkpoint_rewind(PyObject *op, PyObject *unused) {
    (void)unused;
    Checkpoint *self = (Checkpoint *)op;
    struct ckpt *c = self->c;
    if (!c || !c->attached)
        return os_error(EINVAL, "rewind() of a worker that is not stopped");
    const char *why = ckpt_rewind(c);
    if (why)
        return refuse(why); /* the worker stays stopped: the caller kills it */
    return Py_BuildValue("{s:k,s:k,s:k,s:d,s:d,s:d,s:d,s:d}", "pages", c->pages, "ranges",
                         c->ranges, "injected", c->injected, "ms", c->last_ms, "check_ms",
                         c->t_check, "scan_ms", c->t_scan, "repair_ms", c->t_repair, "restore_ms",
                         c->t_restore);
}

static PyObject *Checkpoint_exit_status(PyObject *op, PyObject *unused) {
    (void)unused;
    struct ckpt *c = ((Checkpoint *)op)->c;
    if (!c || !c->gone)
        Py_RETURN_NONE;
    return PyLong_FromLong(c->exit_status);
}

static PyObject *Checkpoint_release(PyObject *op, PyObject *unused) {
    (void)unused;
    ckpt_release((Checkpoint *)op);
    Py_RETURN_NONE;
}

static PyMethodDef checkpoint_methods[] = {
    {"capture", Checkpoint_capture, METH_VARARGS,
     "capture(pid, gate_fd, uffd): checkpoint the worker blocked reading gate_fd "
     "(descriptor numbers as in the worker); returns figures, raises OSError."},
    {"stop", Checkpoint_stop, METH_NOARGS,
     "Stop the worker and kill its children; raises Refused when it cannot be rewound."},
    {"rewind", Checkpoint_rewind, METH_NOARGS,
     "Rewind the stopped worker and let it go; returns figures, raises Refused(reason) "
     "when it cannot be rewound (it stays stopped: kill it)."},
    {"exit_status", Checkpoint_exit_status, METH_NOARGS,
     "The worker's wait status if stopping it found it dead (and reaped it), else None."},
    {"release", Checkpoint_release, METH_NOARGS, "Forget the checkpoint (the worker is gone)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CheckpointType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rewind.memory._inplace.Checkpoint",
    .tp_basicsize = sizeof(Checkpoint),
    .tp_dealloc = Checkpoint_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The checkpoint of one worker, held by the snapshot process.",
    .tp_methods = checkpoint_methods,
    .tp_new = PyType_GenericNew,
};

/* ---- the module --------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"probe", py_probe, METH_NOARGS,
     "None when in-place rewind works here, else the reason it does not."},
    {"track", py_track, METH_NOARGS,
     "(worker) Register every private mapping for write tracking and forbid re-protecting "
     "pages (seccomp); returns the userfaultfd, which capture() takes away."},
    {"drain", py_drain, METH_VARARGS,
     "drain(fd): empty the status pipe; 'done', 'exited', 'none' or 'other'."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "rewind.memory._inplace",
    "In-place rewind of a request process from its parent: ptrace, userfaultfd WP_ASYNC "
    "and PAGEMAP_SCAN.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__inplace(void) {
    if (PyType_Ready(&CheckpointType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Refused = PyErr_NewExceptionWithDoc(
        "rewind.memory._inplace.Refused",
        "The worker cannot be rewound exactly (the reason is the message): replace it.", NULL,
        NULL);
    if (!Refused || PyModule_AddObjectRef(m, "Refused", Refused) < 0 ||
        PyModule_AddObjectRef(m, "Checkpoint", (PyObject *)&CheckpointType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
