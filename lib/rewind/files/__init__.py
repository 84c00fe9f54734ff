"""File snapshots for the REWIND sidecar: capture a tree, diff it, apply the difference back.

``model`` holds the data (``Entry``, ``Snapshot``, ``Change``, ``Metrics``, ``SnapshotError``);
``walk`` reads trees safely; ``diff`` is pure and ``apply`` the only code that mutates;
``snapshot`` is the entry point (``capture``, ``rewind``). ``store`` keeps file contents;
``local`` and ``docker`` (core in ``overlay`` and ``layers``) are the sidecar's drivers.
Nothing here runs on import.
"""
