"""The file sidecar: a small verb API (checkpoint, rewind, status) over the snapshot engine.

``protocol`` is the wire format, ``client`` the launcher's side, ``server`` the service loop,
``__main__`` the entry point. Nothing here runs on import.
"""
