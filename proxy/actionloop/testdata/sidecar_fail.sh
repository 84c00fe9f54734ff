#!/bin/bash
# Test sidecar that cannot start.
echo "sidecar: cannot start" >&2
exit 4
