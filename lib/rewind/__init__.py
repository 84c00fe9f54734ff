"""REWIND runtime: an OpenWhisk Python action runtime that gives every request a clean snapshot.

Subpackages map to process roles: ``launcher`` (runs the action), ``memory`` (memory
rewind backends), ``files`` and ``sidecar`` (file snapshots), ``invoker`` (an OpenWhisk
invoker emulator for tests and local use), ``bench`` (the benchmark suite).
"""

__version__ = "0.1.0"
