#!/bin/bash
# Test compiler with the OW_COMPILER interface: compile.sh <main> <src> <bin>.
# Source "FAIL" makes it print an error (any output means failure); any other
# source becomes bin/ with testdata/launcher.py as bin/exec.
main="$1" src="$2" bin="$3"
if grep -q '^FAIL' "$src/exec" 2>/dev/null; then
  echo "compile error: main=$main"
  exit 1
fi
mv "$src" "$bin"
cp "$(dirname "$0")/launcher.py" "$bin/exec"
chmod 755 "$bin/exec"
echo -n "$main" > "$bin/main.txt"
