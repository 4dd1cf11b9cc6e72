#!/usr/bin/env bash
# Scores a checkpoint on the five validation scenario sets (never the test set) at each speak threshold given, all
# five at once: how the bundled model's threshold is chosen and a run's checkpoint picked (docs/training.md).
#
#   scripts/valbench.sh runs/s11/model 0.5 0.6
#
# Writes out/valbench/NAME-THRESHOLD-SET.{json,txt} and NAME-THRESHOLD-SET_pictures/ (NAME: the checkpoint
# folder's parent) and prints one line per threshold. The sets are made first when missing: sets/val (seed 7),
# sets/val-b (seed 8), sets/val-c (seed 9, since session 16: 144 scenarios told two checkpoints apart by less than
# their noise), sets/val-d and sets/val-e
# (seeds 40 and 41, since session 21: 216 told them apart by about 6 at best), 72 scenarios each. Where Piper's joe
# is installed (the '.[voices]' extra), sets/val-joe too: sets/val's scenarios with every user speaking as joe, a
# human-like voice no training hears, printed on a line of its own and kept out of the five sets' count. Where sox
# is installed (scripts/setup.sh installs it), likewise sets/val-treble+6 and sets/val-treble-6: sets/val's scenarios
# with the treble 6 dB up and down (scripts/colour_set.sh), the colour a microphone gives a voice, and sets/val-phone:
# sets/val through a telephone's band (300-3400 Hz).
#
# AGAINST=NAME (a checkpoint scored here before, e.g. AGAINST=assets for microturn/assets/model, the bundled one)
# adds, per threshold, the paired comparison with NAME's reports at that threshold on the five sets (`microturn
# compare`: the scenarios each passes that the other fails, and the sign test), the way to tell a real gain from the
# sets' noise; a threshold NAME was not scored at gets a line that says so.
#
# WARPS=LIST (e.g. 0.9,0.95,1,1.05,1.1, or none) decodes with those test-time vocal-tract warps (`microturn bench
# --warps`) instead of the checkpoint's own (none, unless it was bundled with `--warps`), and adds "-wLIST" to NAME,
# so that a checkpoint's reports with and without them are kept apart.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: $0 CHECKPOINT THRESHOLD..." >&2
  exit 2
fi
ckpt=$1; shift
[ -f "$ckpt/config.json" ] || { echo "$ckpt is not a checkpoint folder (no config.json)" >&2; exit 2; }
mt=.venv/bin/microturn
sets=(val val-b val-c val-d val-e)  # in this order, with their seeds
declare -A seed=([val]=7 [val-b]=8 [val-c]=9 [val-d]=40 [val-e]=41)
for set in "${sets[@]}"; do
  [ -d sets/$set ] || $mt synth --out sets/$set --per-family 6 --split val --seed "${seed[$set]}"
done
joe=()
if .venv/bin/python -c "from microturn.data import speech; speech.synthesize('yes', speech.Voice('piper', 'joe'))" \
    2>/dev/null; then
  [ -d sets/val-joe ] || $mt synth --out sets/val-joe --per-family 6 --split val --seed 7 --piper 1
  joe=(val-joe)
fi
coloured=()
if command -v sox >/dev/null; then
  for g in +6 -6; do
    [ -d sets/val-treble$g ] || scripts/colour_set.sh sets/val sets/val-treble$g treble $g
    coloured+=(val-treble$g)
  done
  [ -d sets/val-phone ] || scripts/colour_set.sh sets/val sets/val-phone sinc 300-3400
  coloured+=(val-phone)
fi
name=$(basename "$(dirname "$(realpath "$ckpt")")")${WARPS:+-w$WARPS}
warps=()
[ -z "${WARPS:-}" ] || warps=(--warps "$WARPS")
mkdir -p out/valbench
for th in "$@"; do
  pids=() reports=()
  for set in "${sets[@]}" "${joe[@]}" "${coloured[@]}"; do
    reports+=(out/valbench/$name-$th-$set.json)
    OMP_NUM_THREADS=1 $mt bench --scenarios sets/$set --checkpoint "$ckpt" --speak-threshold "$th" "${warps[@]}" \
      --json "${reports[-1]}" > out/valbench/$name-$th-$set.txt 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    wait "$p" || { echo "a bench failed at threshold $th: see out/valbench/$name-$th-*.txt" >&2; exit 1; }
  done
  # the count passed of all the sets' scenarios, then each set's pass %
  .venv/bin/python - "$name threshold $th" "${reports[@]}" <<'PY'
import json, sys
reports = [json.load(open(f)) for f in sys.argv[2:]]
extra = {"val-joe": "spoken by Piper's joe", "val-treble+6": "with the treble 6 dB up",
         "val-treble-6": "with the treble 6 dB down", "val-phone": "through a telephone's band (300-3400 Hz)"}
aside = [r for r in reports if r["set"].rstrip("/").rsplit("/", 1)[-1] in extra]
reports = [r for r in reports if r not in aside]
passed = sum(s["passed"] for r in reports for s in r["scenarios"])
total = sum(len(r["scenarios"]) for r in reports)
print(f"{sys.argv[1]}: {passed} of {total} passed; "
      + " | ".join(f"{r['set']} {r['overall_pass_pct']:g}%" for r in reports))
for r in aside:
    print(f"  sets/val {extra[r['set'].rstrip('/').rsplit('/', 1)[-1]]}: "
          f"{sum(s['passed'] for s in r['scenarios'])} of {len(r['scenarios'])}")
PY
  if [ -n "${AGAINST:-}" ]; then
    theirs=($(for set in "${sets[@]}"; do echo out/valbench/$AGAINST-$th-$set.json; done))
    if ls "${theirs[@]}" >/dev/null 2>&1; then
      echo -n "  against $AGAINST: "
      $mt compare --a "${reports[@]:0:${#sets[@]}}" --b "${theirs[@]}" | tail -1
    else  # not an error: the other thresholds still get scored and compared
      echo "  against $AGAINST: not scored at threshold $th (no out/valbench/$AGAINST-$th-*.json)"
    fi
  fi
done
