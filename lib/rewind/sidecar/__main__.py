"""Entry point of the file sidecar: ``python -m rewind.sidecar`` (sidecar process).

Loads the configuration, builds the driver and the server, and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys

from rewind.files.docker import DockerConfig, DockerDriver
from rewind.files.local import LocalConfig, LocalDriver
from rewind.files.model import SnapshotError
from rewind.sidecar.server import Driver, ServerConfig, SidecarServer


def main(argv: list[str] | None = None) -> int:
    """Parse options, start the chosen driver and serve; returns the exit code."""
    parser = argparse.ArgumentParser(prog="rewind-sidecar", description=__doc__)
    parser.add_argument("--driver", choices=("local", "docker"), default="local")
    parser.add_argument(
        "--listen", help="unix:/path or tcp:LOOPBACK-IP:PORT (default $REWIND_SIDECAR)"
    )
    parser.add_argument("--paths", help="colon-separated roots to protect (overrides REWIND_PATHS)")
    parser.add_argument("--snapshot-dir", help="root-only dir for snapshots")
    args = parser.parse_args(argv)

    driver: Driver
    try:
        config = ServerConfig.from_env(os.environ, args.listen)
        if args.driver == "local":
            driver = LocalDriver(LocalConfig.from_env(os.environ, args.paths, args.snapshot_dir))
        else:
            driver = DockerDriver(DockerConfig.from_env(os.environ, args.snapshot_dir))
        server = SidecarServer(driver, config)
        try:
            server.bind()
        except BaseException:
            driver.close()
            raise
    except (SnapshotError, OSError, ValueError, ImportError) as exc:
        print(f"rewind-sidecar: cannot start: {exc}", file=sys.stderr)
        return 2
    return server.run()


if __name__ == "__main__":
    sys.exit(main())
