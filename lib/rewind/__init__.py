"""REWIND runtime: an OpenWhisk Python action runtime that gives every request a clean snapshot.

Subpackages map to process roles: ``launcher`` (runs the action), ``memory`` (memory
rewind backends), ``files`` and ``sidecar`` (file snapshots). The development tools (an
OpenWhisk invoker emulator, the benchmark suite) are the separate ``rewind_tools`` package.
"""

__version__ = "0.1.0"
