#!/usr/bin/env bash
# make reproduce: train every claim preset in flags/claims/ (resumable: rerun to continue), then write
# docs/findings.md from their results. Runs shared by presets (same run specification) are trained once, in the
# run store runs/claims/store. Budget: about 3 h on 2 CPU cores (docs/findings.md gives the measured time).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
failed=()
for preset in $("$BIN/python" -m mk_keras.experiments.findings --list_presets); do
  # A preset with a failed run or a bad definition does not stop the others; it is named at the end.
  "$BIN/mk-sweep" --flagfile="flags/claims/$preset.flags" || failed+=("$preset")
done
"$BIN/python" -m mk_keras.experiments.findings --runs=runs/claims --out=docs/findings.md
if ((${#failed[@]})); then
  echo "make reproduce: ${failed[*]} did not finish every run; rerun to resume them" >&2
  exit 1
fi
