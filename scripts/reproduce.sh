#!/usr/bin/env bash
# make reproduce: train every claim preset in flags/claims/ (resumable: rerun to continue), then write
# docs/findings.md from their results. Runs shared by presets (same run specification) are trained once, in the
# run store runs/claims/store. Budget: about 3 h on 2 CPU cores (docs/findings.md gives the measured time).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
for preset in $("$BIN/python" -m mk_keras.experiments.findings --list_presets); do
  "$BIN/mk-sweep" --flagfile="flags/claims/$preset.flags"
done
"$BIN/python" -m mk_keras.experiments.findings --runs=runs/claims --out=docs/findings.md
