#!/usr/bin/env bash
# Build the wheel, install it (no dependencies: those are the venv's) into a folder of its own, and from a
# folder outside the source tree import every module of the source tree and run the commands. A module left
# out of the package list is missing from the wheel and fails here, whatever the editable install hides.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
"$root/.venv/bin/pip" wheel --no-deps --no-build-isolation -q -w "$work/dist" "$root"
"$root/.venv/bin/pip" install --no-deps --no-compile -q --target "$work/site" "$work"/dist/*.whl
cd "$work"
PYTHONPATH="$work/site" PYTHONSAFEPATH=1 "$root/.venv/bin/python" "$root/.ci/smoke_installed.py" "$root" "$work/site"
