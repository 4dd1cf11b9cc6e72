#!/usr/bin/env bash
# Scores a checkpoint on the three validation scenario sets (never the test set) at each speak threshold given, all
# three at once: how the bundled model's threshold is chosen and a run's checkpoint picked (docs/training.md).
#
#   scripts/valbench.sh runs/s11/model 0.5 0.6
#
# Writes out/valbench/NAME-THRESHOLD-SET.{json,txt} (NAME: the checkpoint folder's parent) and prints one line per
# threshold. The sets are made first when missing: sets/val (seed 7), sets/val-b (seed 8) and sets/val-c (seed 9,
# since session 16: 144 scenarios told two checkpoints apart by less than their noise), 72 scenarios each.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: $0 CHECKPOINT THRESHOLD..." >&2
  exit 2
fi
ckpt=$1; shift
[ -f "$ckpt/config.json" ] || { echo "$ckpt is not a checkpoint folder (no config.json)" >&2; exit 2; }
mt=.venv/bin/microturn
[ -d sets/val ] || $mt synth --out sets/val --per-family 6 --split val --seed 7
[ -d sets/val-b ] || $mt synth --out sets/val-b --per-family 6 --split val --seed 8
[ -d sets/val-c ] || $mt synth --out sets/val-c --per-family 6 --split val --seed 9
name=$(basename "$(dirname "$(realpath "$ckpt")")")
mkdir -p out/valbench
for th in "$@"; do
  pids=()
  for set in val val-b val-c; do
    OMP_NUM_THREADS=1 $mt bench --scenarios sets/$set --checkpoint "$ckpt" --speak-threshold "$th" \
      --json out/valbench/$name-$th-$set.json > out/valbench/$name-$th-$set.txt 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    wait "$p" || { echo "a bench failed at threshold $th: see out/valbench/$name-$th-*.txt" >&2; exit 1; }
  done
  passed=$(.venv/bin/python -c 'import json, sys; print(sum(s["passed"] for f in sys.argv[1:] for s in json.load(open(f))["scenarios"]))' \
    out/valbench/$name-$th-val{,-b,-c}.json)
  echo "$name threshold $th: $passed of 216 passed; sets/val $(grep overall out/valbench/$name-$th-val.txt)" \
       "| sets/val-b $(grep overall out/valbench/$name-$th-val-b.txt) | sets/val-c $(grep overall out/valbench/$name-$th-val-c.txt)"
done
