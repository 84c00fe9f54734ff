"""The request protocol: loading the action, the line protocol, errors and exit codes.

The launcher and every memory backend use it; it imports nothing else of the runtime.
"""
