"""The launcher: loads the action and serves the ActionLoop protocol on stdin/fd 3."""
