#!/usr/bin/env bash
# Fine-tunes a checkpoint (or trains a model from scratch) on one bare GPU machine within a time budget, on
# training shards written there with every core, so no data has to travel: only this repository and a folder of
# assets (25-35 MB). The recipe of the bundled model's GPU phase (docs/training.md, session 39).
#
#   scripts/train_gpu.sh --pack ASSETS CHECKPOINT   here: the assets (speech engines, wheels, the checkpoint)
#   scripts/train_gpu.sh --pack ASSETS none         ... and no checkpoint: a model from scratch (EXTRA="--preset P")
#   scripts/train_gpu.sh ASSETS OUT SECONDS         there: write shards, train, put the model in OUT
#
# There, in SECONDS (the whole budget): the speech engines are unpacked and checked, a 3-step training run (stopped
# after 2 and resumed) checks the GPU path while shards are written for SYNTH_SECONDS (two writers: every family,
# and the families that need the words understood), then training runs 100 steps to measure its speed, and resumes
# with the number of steps that fills what is left (a checkpoint every 100 steps). OUT gets the model (fp32 in parts
# under 16 MiB: scripts/join_halves.py puts it together), its log, curves and config, and gpu.txt with the machine's
# figures. Settings (environment): SYNTH_SECONDS, BATCH, LR, MIX (family weights), SEED (the shards' first seed),
# WORKERS (loading processes), EXTRA (more flags for train; session 57's bundled model was trained to hear through a
# microphone's colour: give its fine-tunes "--eq 2" or they may lose that), LATE (the chance a reply to a user's
# turn starts one or two micro-turns late: synth --late-replies; default 0; at 0.4 a CPU fine-tune lost turns,
# session 46; 0.1 kept the first moment's p(speak) near the bundled model's and still owed the reply a micro-turn
# later, session 47),
# PY (the Python to use), THROUGHPUT (presets, e.g.
# "100m 100m-moe 1b 1b-moe": while the shards are written, benchmarks/train_throughput.py measures their training
# tokens/s and MFU on the GPU, idle until then, and stops when the writers do; its figures and PNG go to OUT).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
MIX=${MIX:-timespeak=4,cuespeak=6,delegate=3,translate=2,interrupt=1.5,turn=1.5,user_backchannel=1.5,refusal=0.75,backchannel=0.75}
TASK_FAMILIES=timespeak,cuespeak,delegate,translate

if [ "${1:-}" = "--pack" ]; then
  A=$2; CK=$3
  rm -rf "$A"; mkdir -p "$A/whl"
  tmp=$(mktemp -d); L=/usr/lib/x86_64-linux-gnu; S=$tmp/speech
  mkdir -p "$S/core" "$S/deps"
  # the training split's voices only (flite kal, kal16, slt: data/speech/voice.py SPLIT) and English only
  for f in libespeak-ng.so.1 libpcaudio.so.0 libsonic.so.0 libflite.so.1 libflite_usenglish.so.1 \
           libflite_cmulex.so.1 libflite_cmu_us_kal.so.1 libflite_cmu_us_kal16.so.1 libflite_cmu_us_slt.so.1; do
    cp -L "$L/$f" "$S/core/"
  done
  for f in $(ldd "$L/libespeak-ng.so.1" "$L/libflite.so.1" | awk '/=>/{print $3}' | sort -u); do
    b=$(basename "$f"); case $b in libc.so.6|libm.so.6) ;; *) [ -e "$S/core/$b" ] || cp -L "$f" "$S/deps/";; esac
  done
  cp -r "$L/espeak-ng-data" "$S/"
  find "$S/espeak-ng-data" -maxdepth 1 -name "*_dict" ! -name en_dict -delete
  tar -C "$tmp" -cJf "$A/speech.tar.xz" speech && rm -rf "$tmp"
  for p in soxr soundfile cffi pycparser; do
    v=$(.venv/bin/pip show "$p" | awk '/^Version/{print $2}')
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d "$A/whl" "$p==$v"
  done
  # the checkpoint in float16 (train --init reads it back as float32): a depth-5 model is 23 MB so, 46 MB as float32,
  # and all that travels to the machine must fit in 64 MiB
  [ "$CK" = none ] || .venv/bin/microturn model bundle "$CK" --out "$A/init"
  du -sh "$A"; exit 0
fi

A=$1; OUT=$2; BUDGET=$3
SYNTH_SECONDS=${SYNTH_SECONDS:-180}
BATCH=${BATCH:-64}
LR=${LR:-6e-4}
D=data/gpu; R=runs/gpu; LOG=$OUT/gpu.txt
mkdir -p "$OUT" "$D"
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR
PY=${PY:-python3}

# 1. packages the machine lacks, and the speech engines with whatever libraries the machine lacks for them
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
$PY -c "import soundfile, soxr" 2>/dev/null ||
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$A"/whl/*.whl
S=/tmp/speech
[ -d $S ] || tar -C /tmp -xJf "$A/speech.tar.xz"
mkdir -p $S/lib && ln -sf $S/core/* $S/lib/
for _ in 1 2 3 4 5; do
  miss=$(LD_LIBRARY_PATH=$S/lib ldd $S/lib/*.so* | awk '/not found/{print $1}' | sort -u)
  [ -z "$miss" ] && break
  for m in $miss; do ln -sf "$S/deps/$m" $S/lib/; done
done
export ESPEAK_DATA_PATH=$S/espeak-ng-data
speech() { LD_LIBRARY_PATH=$S/lib "$@"; }
mt() { $PY -m microturn "$@"; }
say "$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"); $(nproc) cores; torch $($PY -c 'import torch; print(torch.__version__)'); /dev/shm $(df -h /dev/shm | awk 'NR==2{print $4}') free; $(find $S/lib -lname "$S/deps/*" | wc -l) libraries the speech engines need taken along"
speech $PY -c "
from microturn.data.speech import Voice, synthesize
for v in (Voice('espeak', 'en-us'), Voice('flite', 'slt')):
    s = synthesize('one two three', v); assert len(s.words) == 3 and s.audio.std() > 0, v
print('speech engines: ok')" | tee -a "$LOG"

# 2. a 3-step run checks the GPU path while the shards are written
rm -rf /tmp/smoke /tmp/smoke-run
speech mt synth --out /tmp/smoke --shards --split train --per-family 2 --seed 99 --workers 8 >/dev/null 2>&1
shm_gb=$(df -k --output=avail /dev/shm | tail -1); shm_gb=$((shm_gb / 1048576))
WORKERS=${WORKERS:-$([ "$shm_gb" -ge 24 ] && echo 12 || { [ "$shm_gb" -ge 6 ] && echo 4 || echo 0; })}
INIT=(); [ -f "$A/init/config.json" ] && INIT=(--init "$A/init")  # else a model from scratch
TRAIN=(--preset cpu "${INIT[@]}" --val "" --batch "$BATCH" --lr "$LR" --min-lr 3e-5 --warmup 100
       --ckpt-every 100 --eval-every 1000000 --conversations 0.4 --recap-weight 0.1 --early-listen 3 --task-listen 3
       --workers "$WORKERS" --mix "$MIX" --bucket 8)  # batches of like lengths: a random batch of 64 pads to the longest
read -ra extra <<< "${EXTRA:-}"  # more flags for train, after these (a later flag wins), e.g. EXTRA="--openings 0.5"
TRAIN+=("${extra[@]}")
smoke() { mt train "${TRAIN[@]}" --data /tmp/smoke --out /tmp/smoke-run --steps 3 --batch 4 --mix "" "$@"; }
{ smoke --stop-at 2 && smoke; } > /tmp/smoke.log 2>&1 &  # interrupted and resumed, as the training below will be
smoke=$!
end=$(( $(date +%s) + SYNTH_SECONDS ))
writer() {  # name, families, sessions per family, first seed: one set of shards after another until the end
  local name=$1 fams=$2 n=$3 seed=$4 took=0 t
  while t=$(date +%s); [ $(( t + took )) -lt $end ]; do
    if [ ! -f $D/$name-$seed/.done ]; then
      speech mt synth --out $D/$name-$seed --shards --split train --per-family "$n" --seed "$seed" --families "$fams" \
        --difficulty 0.3,1 --generated-voices 0.8 --generated-accents 0.5 --late-replies "${LATE:-0}" --workers 7 \
        > /tmp/synth-$name-$seed.log 2>&1
      touch $D/$name-$seed/.done
      took=$(( $(date +%s) - t ))
    fi
    seed=$(( seed + 2 ))
  done
}
ALL=$($PY -c "from microturn.data.world import FAMILIES; print(','.join(FAMILIES))")
SEED=${SEED:-21}  # another for fresh sessions in a second run
writer all "$ALL" 100 "$SEED" & w1=$!
writer task $TASK_FAMILIES 300 $((SEED + 1)) & w2=$!
if ! wait $smoke; then
  kill $w1 $w2 2>/dev/null; pkill -f "microturn synth" || true
  tail -30 /tmp/smoke.log | tee -a "$LOG"; say "the GPU check failed"; exit 1
fi
say "GPU check: ok ($WORKERS loading workers)"
if [ -n "${THROUGHPUT:-}" ] && [ $(( end - $(date +%s) )) -gt 60 ]; then  # the GPU is idle while shards are written
  timeout -s INT -k 20 $(( end - $(date +%s) )) $PY benchmarks/train_throughput.py --data /tmp/smoke --presets $THROUGHPUT \
    --json "$OUT/train_throughput.json" > /tmp/throughput.log 2>&1 || true
  tail -12 /tmp/throughput.log | tee -a "$LOG"
fi
wait $w1 $w2 || true
for d in $D/*/; do [ -f "$d/.done" ] || rm -rf "$d"; done  # sets cut short have only their easy sessions: left out
say "shards: $(cat $D/*/shard-*/sessions.json | grep -o '"family"' | wc -l) sessions in $(ls -d $D/*/ | wc -l) sets:" \
    "$(cd $D && ls -d */ | tr -d / | sort -t- -k2n | tr '\n' ' ')"

# 3. 100 steps measure the step time (steps 50-100: the first ones wait on the loading workers and ran 2 times
# slower on an H200 in session 39); the same run then resumes with the steps that fill the budget. The steps after the
# resume run faster than the measured ones (session 41 on an H200: 0.125 s measured, 0.085 s from step 200 on), and
# the resume itself takes about 30 s (the loading workers start again): the plan counts both, and the budget's SIGINT
# stops the run with a checkpoint should it still run over.
# (--steps 2000, about what follows: the curriculum's progress is step / steps, and with a far longer schedule these
# 100 steps drew only the sessions of the lowest difficulty, 232 of 36,000 in session 41; the warm-up is the same)
mt train "${TRAIN[@]}" --data $D --out $R --steps 2000 --stop-at 100 > $OUT/train.log 2>&1
per=$($PY -c "
import json; r = [json.loads(l) for l in open('$R/log.jsonl')]; t = {x['step']: x['time'] for x in r if x['kind'] == 'train'}
print((t[100] - t[50]) / 50)")
left=$(( BUDGET - ($(date +%s) - T0) - 45 ))
[ "$left" -gt 60 ] || { say "no time left to train after step 100"; left=60; }
steps=$($PY -c "print(100 + int(($left - 50) / (0.75 * $per)))")
say "step time $per s at batch $BATCH; training to step $steps in about $left s"
timeout -s INT $left $PY -m microturn train "${TRAIN[@]}" --data $D --out $R --steps "$steps" >> $OUT/train.log 2>&1 \
  || say "training stopped by the budget (SIGINT): checkpoint saved at the step it stopped"
$PY - "$R/model" "$OUT" <<'EOF'
import json, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
src, out = Path(sys.argv[1]), Path(sys.argv[2])
w = load_file(src / "model.safetensors")
parts, used = [{}], 0  # parts of at most 15 MiB: a file that comes back from the machine is at most 16 MiB
for k in sorted(w):
    size = w[k].numel() * w[k].element_size()
    if parts[-1] and used + size > 15 * 2**20:
        parts.append({})
        used = 0
    parts[-1][k], used = w[k], used + size
for i, p in enumerate(parts):
    save_file(p, out / f"model-{i}.safetensors")
(out / "config.json").write_text((src / "config.json").read_text())
print("model: step", json.loads((src / "config.json").read_text())["extra"]["step"], "in", len(parts), "parts")
EOF
cp $R/log.jsonl $R/train_config.json $OUT/ 2>/dev/null || true
say "done"
