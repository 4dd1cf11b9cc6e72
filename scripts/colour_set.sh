#!/usr/bin/env bash
# Copies a scenario set with its audio heard through a sox effect: the same scenarios, rules and pictures, the user's
# speech coloured the way a microphone, a laptop or a phone line colours it. How robust a checkpoint is to the
# spectrum it hears (session 56: the bundled model passes 60 of sets/val's 72 scenarios as rendered, 31 with the
# treble 6 dB up and 41 with it 6 dB down). scripts/valbench.sh makes sets/val-treble+6 and sets/val-treble-6 so.
#
#   scripts/colour_set.sh sets/val sets/val-treble+6 treble +6
#   scripts/colour_set.sh sets/val sets/val-phone sinc 300-3400
#
# The effect is sox's (`sox --help-effect treble`); DST must not exist yet, and is removed again if anything fails.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 SRC DST SOX_EFFECT [ARGS...]" >&2
  exit 2
fi
src=$1 dst=$2; shift 2
[ -f "$src/manifest.jsonl" ] || { echo "$src is not a scenario set (no manifest.jsonl)" >&2; exit 2; }
[ ! -e "$dst" ] || { echo "$dst exists already" >&2; exit 2; }
command -v sox >/dev/null || { echo "sox is not installed (scripts/setup.sh installs it)" >&2; exit 2; }
sox -n -r 16000 -n synth 0.1 sine 440 "$@" 2>/dev/null ||
  { echo "sox cannot apply the effect: $*" >&2; exit 2; }
trap 'rm -rf "$dst"' ERR
mkdir -p "$dst"
cp -r "$src"/. "$dst"/
find "$dst" -name '*.wav' -print0 | while IFS= read -r -d '' f; do
  # 16-bit like the sets' audio, undithered (the same copy every time); -V1: errors only, not the few samples
  # that clip at +6 dB (a larger gain wants sox's "gain -n" after it)
  sox -V1 -D -R "$f" -b 16 "$f.tmp.wav" "$@"
  mv "$f.tmp.wav" "$f"
done
echo "wrote $dst: $(find "$dst" -name '*.wav' | wc -l) audio files through sox $*"
