"""Model configuration: one dial (``depth``) scales everything; named presets pick a depth and a few switches."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..stream.layout import Layout


@dataclass(frozen=True)
class ModelConfig:
    depth: int = 4  # the dial: n_layer = depth, d_model = 64 * depth, head dim 64, kv heads = heads / 2 (all if odd)
    vocab_size: int = 2048
    n_experts: int = 0  # 0: dense SwiGLU; > 0: mixture of experts
    top_k: int = 2
    window: int = 1800  # sliding attention window in tokens (40 s at 9 tokens per 200 ms)
    pinned: int = 270  # tokens at the session start that stay visible forever (instructions): 30 micro-turns
    flow_width: int = 256
    audio_conv: int = 0  # causal convolution layers over the audio frames before they form tokens (0: none)
    hear_back: bool = False  # each audio token also reads the word the listening head heard one micro-turn before
    layout: Layout = field(default_factory=Layout)

    @property
    def n_layer(self) -> int:
        return self.depth

    @property
    def d_model(self) -> int:
        return 64 * self.depth

    @property
    def n_head(self) -> int:
        return max(2, self.depth)  # head dim 64

    @property
    def n_kv_head(self) -> int:
        # grouped-query attention: two query heads share a key/value head; an odd number of heads cannot pair up, so
        # each has its own (depth 5: 5 of each)
        return self.n_head // 2 if self.n_head % 2 == 0 else self.n_head

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def d_ff(self) -> int:
        return int(8 * self.d_model / 3 / 64 + 0.999) * 64 // (2 if self.n_experts else 1)

    def to_json(self) -> dict:
        d = asdict(self)
        d["layout"] = self.layout.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise ValueError(f"model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model config has unknown fields: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "layout" in d:
            d["layout"] = Layout(**d["layout"])
        return cls(**d)


PRESETS = {
    "cpu": dict(depth=4),  # ~5M parameters: trains on 2 CPU cores, steps in a few ms
    "cpu-moe": dict(depth=4, n_experts=4, top_k=2),
    "100m": dict(depth=12, window=4500, pinned=1350),  # ~100M, for one GPU; 100 s window, 30 s pinned
    "100m-moe": dict(depth=12, n_experts=8, top_k=2, window=4500, pinned=1350),
    "1b": dict(depth=28, window=9000, pinned=1350),  # ~1B
    "1b-moe": dict(depth=28, n_experts=8, top_k=2, window=9000, pinned=1350),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return ModelConfig(**(PRESETS[name] | overrides))
