"""How human-like each speech engine's English is: sentences rendered by each voice and decoded by PocketSphinx, a
recogniser trained on people's speech (its bundled en-us model, a general language model), word error rate per voice.
Not our model: a second opinion on the voices our model learns to hear, and on how far they are from a person's.

Session 34 (a fresh decoder per voice): espeak-ng, 70 % of the training voices, is the least human-like of all (93-95 %
WER), flite's recorded voices 11-19 % (awb, held out, 19 %), festival's ked 32 %, MBROLA's us1 37 %, Kokoro's man
(jm_kumo) 10 % and a blend led by him 12 %, Kokoro's women 64-78 % (their English is the least clear):

    python scripts/intelligibility_report.py
"""
import argparse
import sys

import numpy as np

from microturn.data.speech import Voice, VoiceNotInstalled, synthesize

SENTENCES = ("What is twenty two times seventeen", "Say bingo whenever I say purple",
             "Please tell me about the weather today", "I went to the store and bought some apples",
             "Can you count how many times I jump", "The quick brown fox jumps over the lazy dog",
             "In ten seconds say ready", "My brother lives in a small house near the river",
             "Translate this into Spanish please", "I think we should leave early tomorrow morning")
VOICES = ("espeak:en-us", "espeak:en-gb-x-gbclan+m3", "flite:slt", "flite:awb", "flite:kal16", "festival:ked",
          "mbrola:us1", "kokoro:jf_alpha", "kokoro:jm_kumo", "kokoro:jf_tebukuro", "kokoro:jm_kumo+~3")


def errors(ref: list[str], hyp: list[str]) -> int:
    """Word edit distance."""
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return int(d[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voices", nargs="+", default=VOICES, help="voice ids (microturn.data.speech.Voice.id)")
    a = ap.parse_args()
    try:
        from pocketsphinx import Decoder
    except ImportError:
        sys.exit("needs pocketsphinx (pip install -e '.[voices]'; scripts/setup.sh installs it)")
    for vid in a.voices:
        dec = Decoder(loglevel="ERROR")  # a fresh one per voice: its cepstral mean adapts as it hears
        try:
            voice = Voice.from_id(vid)
            wrong = total = 0
            for text in SENTENCES:
                audio = synthesize(text, voice).audio
                dec.start_utt()
                dec.process_raw((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
                dec.end_utt()
                hyp = dec.hyp().hypstr.lower().split() if dec.hyp() else []
                wrong += errors(text.lower().split(), hyp)
                total += len(text.split())
        except VoiceNotInstalled as e:
            print(f"{vid:<28} not installed: {e}")
            continue
        print(f"{vid:<28} WER {wrong / total:6.1%} of {total} words")


if __name__ == "__main__":
    main()
