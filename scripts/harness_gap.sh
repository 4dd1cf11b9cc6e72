#!/usr/bin/env bash
# Where a checkpoint stands against the harness baselines on the families in which they are strong, with enough
# scenarios to tell (issue #6: "beats the harness on every family"). The test set's 12 scenarios a family cannot:
# 11 of 12 against 12 of 12 is no evidence either way. This scores sets/gap, 200 validation scenarios each of turn,
# pause, backchannel, interrupt and refusal (held-out voices and sentences, never the test set), with the checkpoint
# and with both harnesses (Silero VAD + LiveKit's or Pipecat's endpointing + the oracle responder), and prints
# `microturn compare`'s paired table per family and the checkpoint's passes by the user's voice.
#
#   scripts/harness_gap.sh microturn/assets/model
#
# Makes sets/gap (seed 66) and the harnesses' reports (out/gap/harness-*.json) when missing, once; writes
# out/gap/NAME.json (NAME: the checkpoint folder's parent, as scripts/valbench.sh names it). About 10 min the first
# time on two cores (session 66), 5 min after. WARPS=LIST decodes with test-time vocal-tract warps (`bench --warps`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: $0 CHECKPOINT" >&2; exit 2; }
ckpt=$1
[ -f "$ckpt/config.json" ] || { echo "$ckpt is not a checkpoint folder (no config.json)" >&2; exit 2; }
mt=.venv/bin/microturn
SEED=66 FAMILIES=turn,pause,backchannel,interrupt,refusal
[ -d sets/gap ] || $mt synth --out sets/gap --per-family 200 --split val --seed $SEED --families $FAMILIES
mkdir -p out/gap
pids=()
for h in livekit pipecat; do
  [ -f out/gap/harness-$h.json ] && continue
  OMP_NUM_THREADS=1 $mt bench --scenarios sets/gap --agent harness --harness $h --n-pictures 0 \
    --json out/gap/harness-$h.json > out/gap/harness-$h.txt 2>&1 &
  pids+=($!)
done
name=$(basename "$(dirname "$(realpath "$ckpt")")")${WARPS:+-w$WARPS}
warps=()
[ -z "${WARPS:-}" ] || warps=(--warps "$WARPS")
OMP_NUM_THREADS=1 $mt bench --scenarios sets/gap --checkpoint "$ckpt" "${warps[@]}" --trace --n-pictures 0 \
  --json out/gap/$name.json > out/gap/$name.txt 2>&1
for p in "${pids[@]}"; do wait "$p" || { echo "a harness bench failed: see out/gap/harness-*.txt" >&2; exit 1; }; done
for h in livekit pipecat; do
  echo "== $name (A) against the harness $h + oracle (B), sets/gap"
  $mt compare --a out/gap/$name.json --b out/gap/harness-$h.json
done
echo "== $name by the user's voice"
.venv/bin/python scripts/valbench_voices.py --report out/gap/$name.json --seed $SEED --split val
