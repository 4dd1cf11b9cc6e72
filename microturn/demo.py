"""``microturn demo``: an end-to-end run of the codecs on real speech (espeak-ng): text -> speech with word times
-> dMel bins -> log-mel -> Griffin-Lim waveform, written as WAV files and a picture."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .codecs import dmel
from .codecs.audio import SAMPLE_RATE, save_wav
from .codecs.vocoder import get_vocoder


def run(text: str = "When I say tiger, say bingo.", out: str | Path = "out/demo") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.speech import AGENT_VOICE, synthesize

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sp = synthesize(text, AGENT_VOICE)
    bins = dmel.encode(sp.audio)
    decoded = get_vocoder()(dmel.dequantize(bins))
    save_wav(out / "original.wav", sp.audio)
    save_wav(out / "decoded.wav", decoded)
    err = float(np.abs(dmel.log_mel(decoded)[: len(bins)] - dmel.log_mel(sp.audio)[: len(bins)]).mean())
    fig, ax = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    ext = [0, len(bins) / dmel.FRAMES_PER_SECOND, 0, dmel.N_MELS]
    ax[0].imshow(bins.T, origin="lower", aspect="auto", extent=ext, cmap="magma")
    ax[0].set_title(f"dMel bins of '{text}' ({len(bins)} frames, 16 levels)")
    for w in sp.words:
        ax[0].axvspan(w.start, w.end, color="cyan", alpha=0.12)
        ax[0].text(w.start, dmel.N_MELS - 8, w.w, color="white", fontsize=8)
    ax[1].imshow(dmel.log_mel(decoded).numpy().T, origin="lower", aspect="auto", extent=ext, cmap="magma")
    ax[1].set_title(f"log-mel of the Griffin-Lim decoding (mean abs difference {err:.2f})")
    ax[1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=100)
    plt.close(fig)
    info = {"text": text, "seconds": len(sp.audio) / SAMPLE_RATE, "frames": len(bins), "logmel_error": err,
            "words": [(w.w, round(w.start, 2), round(w.end, 2)) for w in sp.words], "out": str(out)}
    print(f"spoke {info['seconds']:.2f} s with word times {info['words']}")
    print(f"dMel: {len(bins)} frames x 80 channels; decoded log-mel differs by {err:.3f} on average")
    print(f"wrote {out}/original.wav, {out}/decoded.wav and {out}/demo.png")
    return info
