"""festival through its program, one ``festival -b`` process per utterance; it drives festival's own voices and
MBROLA's (festival's front end and prosody, MBROLA's diphones)."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from microturn.data.speech.base import Raw, ascii_with_offsets, token_pieces
from microturn.data.speech.voice import FESTIVAL_DRIVEN, Voice, VoiceNotInstalled

# Prints each Token's name, then each of its words' start and end: "T\tname" and "W\tstart\tend" lines. The Token
# relation is a tree (a token, its words below it) and utt.relation.items lists every item of it, words too: only the
# tokens, the items without a parent, are reported (a word listed as a token of its own moved the in-order search for
# the next token's name, so a word said twice in a sentence took the wrong words' times).
_FESTIVAL_REPORT = """(mapcar (lambda (tok) (if (not (item.parent tok)) (begin (format t "T\\t%s\\n" (item.name tok))
  (mapcar (lambda (w) (format t "W\\t%f\\t%f\\n" (item.feat w "word_start") (item.feat w "word_end")))
    (item.daughters tok))))) (utt.relation.items utt 'Token))"""


class Festival:
    """festival through its program: one ``festival -b`` process per utterance (no state is shared between calls).
    It also drives the mbrola voices (festival's front end and prosody, MBROLA's diphones)."""

    TIMEOUT = 60.0  # seconds

    @staticmethod
    def _controls(voice: Voice) -> str:
        if voice.name == "slt_hts":  # the HTS engine's own speed; its pitch cannot be set (Voice checks)
            return f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {voice.rate}))))'
        return (f"(Parameter.set 'Duration_Stretch (/ (Parameter.get 'Duration_Stretch) {voice.rate}))\n"
                f"(set! int_lr_params (mapcar (lambda (p) (if (member (car p) '(target_f0_mean target_f0_std)) "
                f"(list (car p) (* {voice.pitch} (cadr p))) p)) int_lr_params))")

    def synth(self, text: str, voice: Voice) -> Raw:
        ascii_text, origin = ascii_with_offsets(text)
        quoted = ascii_text.replace("\\", " ").replace('"', " ")  # a Scheme string; the offsets stay the same
        scheme, package = FESTIVAL_DRIVEN[voice.engine][voice.name]
        with tempfile.TemporaryDirectory(prefix="microturn-festival-") as tmp:
            wav = Path(tmp) / "out.wav"
            script = Path(tmp) / "synth.scm"
            script.write_text(f"(voice_{scheme})\n{self._controls(voice)}\n"
                              f'(set! utt (Utterance Text "{quoted}"))\n(utt.synth utt)\n'
                              f"(utt.save.wave utt \"{wav}\" 'riff)\n{_FESTIVAL_REPORT}\n")
            try:
                run = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True,
                                     timeout=self.TIMEOUT)
            except FileNotFoundError:
                raise VoiceNotInstalled(f"festival is not installed (apt install festival {package}; "
                                        "scripts/setup.sh installs all the voices)") from None
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"festival took more than {self.TIMEOUT:.0f} s on {text!r}") from None
            errors = [line for line in (run.stdout + run.stderr).splitlines() if "SIOD ERROR" in line]
            if errors or run.returncode or not wav.exists():
                if any("voice_" in line and "unbound" in line for line in errors):
                    raise VoiceNotInstalled(f"{voice.engine} voice {voice.name!r} is not installed "
                                            f"(apt install {package})")
                how = f"crashed (signal {-run.returncode})" if run.returncode < 0 else "failed"
                raise RuntimeError(f"festival {how} on {text!r} in voice {voice.id}: "
                                   f"{' '.join(errors) or run.stderr.strip()}")
            audio, rate = soundfile.read(wav, dtype="int16")
        tokens: list[tuple[str, list[tuple[float, float]]]] = []
        for line in run.stdout.splitlines():
            kind, _, rest = line.partition("\t")
            if kind == "T":
                tokens.append((rest, []))
            elif kind == "W" and tokens:
                a, b = rest.split("\t")
                tokens[-1][1].append((float(a), float(b)))
        return Raw(audio.astype(np.float32), rate, token_pieces(tokens, ascii_text, origin))
