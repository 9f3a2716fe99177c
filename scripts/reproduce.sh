#!/usr/bin/env bash
# make reproduce: train every claim preset in flags/claims/ (resumable: rerun to continue), then write
# docs/findings.md from their results. Runs shared by presets (same run specification) are trained once, in the
# run store runs/claims/store. WORKERS processes (default: one per core, cores/WORKERS TensorFlow threads each) go
# through the presets in the same order and claim ready runs from each (docs/sweeps.md): at these model sizes one
# process leaves much of a second core idle (single-threaded tracing and input work, small ops).
# Budget: docs/findings.md gives the measured time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
WORKERS=${WORKERS:-$(nproc)}
if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
  echo "make reproduce: WORKERS=$WORKERS; allowed: a positive integer" >&2
  exit 2
fi
THREADS=$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))
presets=$("$BIN/python" -m mk_keras.experiments.findings --list_presets)
LOG_DIR=${LOG_DIR:-runs/claims}
mkdir -p "$LOG_DIR"
failed_file=$(mktemp)
trap 'rm -f "$failed_file"' EXIT

worker() {
  local index=$1 preset
  for preset in $presets; do
    # A preset with a failed run or a bad definition does not stop the others; it is named at the end.
    TF_NUM_INTRAOP_THREADS=$THREADS TF_NUM_INTEROP_THREADS=$THREADS "$BIN/mk-sweep" --flagfile="flags/claims/$preset.flags" \
      --num_shards="$WORKERS" --shard_index="$index" || echo "$preset" >> "$failed_file"
  done
}

if ((WORKERS == 1)); then
  worker 0
else
  # Background jobs of a script ignore Ctrl-C: pass INT/TERM on, so no worker keeps training (and holding run
  # locks) after make reproduce has stopped.
  # Each worker gets its own process group (set -m), so the trap stops the worker and the mk-sweep it runs.
  pids=()
  trap 'for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done; wait; exit 130' INT TERM
  set -m
  for ((i = 0; i < WORKERS; i++)); do
    echo "make reproduce: worker $i of $WORKERS appends to $LOG_DIR/worker$i.log"
    worker "$i" >> "$LOG_DIR/worker$i.log" 2>&1 &
    pids+=($!)
  done
  set +m
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || echo "worker$i(exit status $?)" >> "$failed_file"
  done
fi
"$BIN/python" -m mk_keras.experiments.findings --runs=runs/claims --out=docs/findings.md
failed=$(sort -u "$failed_file" | tr '\n' ' ')
if [ -n "$failed" ]; then
  echo "make reproduce: not every run finished: ${failed% }; rerun to resume them" >&2
  exit 1
fi
