"""Memory rewind backends: how each request gets the checkpoint's process state.

``none`` reuses one process (insecure baseline), ``fork`` runs each request in a child of
a snapshot process, ``fresh`` starts a new interpreter per request, ``kernel`` uses the
REWIND kernel's checkpoint/rewind system calls. ``launcher.backend.choose`` picks one.
"""
