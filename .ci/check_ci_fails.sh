#!/usr/bin/env bash
# By hand, not in CI: does .ci/run fail when a step of the README's set-up breaks? For each mutation, clone
# the committed HEAD into a scratch folder, break one thing, run .ci/run, and expect a non-zero exit at the
# step that was broken. Prints one line per mutation; exits non-zero if any mutation went unnoticed.
#   bash .ci/check_ci_fails.sh [MUTATION …]      (default: all; each costs a venv and up to a training)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
all=(pip-fails module-left-out training-fails lint-fails)
mutations=("${@:-${all[@]}}")

mutate() {  # $1 = mutation, in the current folder (a scratch clone)
  case "$1" in
    pip-fails)        sed -i 's/"tqdm>=4.66",/"tqdm>=4.66",\n    "no-such-package-for-circuits-ci==0.0",/' pyproject.toml ;;
    module-left-out)  sed -i 's/include = \["circuits\*", "analyses\*"\]/include = ["circuits", "circuits.data", "circuits.training", "circuits.scoring", "circuits.report", "analyses"]/' pyproject.toml ;;
    training-fails)   sed -i 's/^    ds = dataset_from_args(args)$/    raise RuntimeError("broken on purpose")/' circuits/train.py ;;
    lint-fails)       printf 'import os  # unused on purpose\n' >> circuits/model.py ;;
    *) echo "unknown mutation $1"; return 2 ;;
  esac
  git diff --quiet && { echo "mutation $1 changed nothing"; return 2; }
  return 0
}

status=0
for m in "${mutations[@]}"; do
  work="$(mktemp -d)/repo"
  git clone -q "$root" "$work"
  (cd "$work" && mutate "$m") || { status=1; continue; }
  start=$(date +%s)
  (cd "$work" && bash .ci/run) >"$work.log" 2>&1
  rc=$?
  last=$(grep -v '^\s*$' "$work.log" | tail -n 1 | cut -c1-150)
  if [ "$rc" -ne 0 ]; then
    echo "$m: .ci/run failed as it should (exit $rc after $(( $(date +%s) - start )) s): $last"
  else
    echo "$m: .ci/run PASSED despite the mutation (log: $work.log)"
    status=1
  fi
done
exit $status
