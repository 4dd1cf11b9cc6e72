"""Model checkpoints: a folder with ``model.safetensors`` (the weights) and ``config.json`` (how to build them).

``config.json`` = the fields of ``ModelConfig.to_json()`` plus ``{"format": "microturn-model", "version": 1}`` plus
anything the caller adds (training step, data, ...) under ``"extra"``; fields added later (``LATER_FIELDS``) may be
absent and then mean what checkpoints written before them were. ``load`` checks everything before building a model
and says exactly what is wrong: a missing or malformed file, unknown config fields, decoding settings (``extra.sampling``)
the model does not take, missing or unexpected tensors, a tensor whose shape does not match the config, weights that
are not finite, and a config and weights of two different saves (``save`` gives both the same ``save_id``).

The text head is tied to ``embed.text.weight`` by computation (``h @ W.T``), not by a second parameter, so the state
dict has no shared storage and safetensors stores every tensor once.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..stream.layout import Layout
from .config import ModelConfig
from .model import InteractionModel

FORMAT = "microturn-model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "model"
_RESERVED = ("format", "version", "extra", "save_id")
# config fields added after version 1, with the value a checkpoint without them means
LATER_FIELDS = {"audio_conv": 0, "hear_back": False}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing files, bad config, weights that do not match the config."""


def _folder(path: str | Path) -> Path:
    """A checkpoint folder, or a file inside one (``.../model.safetensors`` or ``.../config.json``)."""
    p = Path(path)
    if p.name in (WEIGHTS, CONFIG) or p.suffix in (".safetensors", ".json"):
        return p.parent
    return p


def _unwrap(model) -> InteractionModel:
    for attr in ("module", "_orig_mod"):  # DistributedDataParallel, torch.compile
        while hasattr(model, attr) and isinstance(getattr(model, attr), torch.nn.Module):
            model = getattr(model, attr)
    if not isinstance(model, InteractionModel):
        raise TypeError(f"expected an InteractionModel, got {type(model).__name__}")
    return model


def save(model, path: str | Path, extra: dict | None = None, dtype: torch.dtype | None = None,
         state: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into the folder ``path`` (created if needed).

    ``dtype``: store floating-point weights in this type (``torch.float16`` or ``torch.bfloat16`` halves the file;
    ``load`` converts back to the model's float32). A weight the type cannot hold (beyond float16's range) is
    refused rather than stored as infinity.
    ``extra``: JSON-serialisable information stored in ``config.json`` under ``"extra"`` (training step, ...).
    ``state``: the weights to write, when not the model's own ``state_dict()`` (a sharded model's, gathered).
    Both files are written to temporary names first and renamed, so a crash never leaves half a file; both carry
    this save's ``save_id``, so that a crash between the two renames (new weights beside the old config) is found
    by ``load`` rather than read as one checkpoint.
    """
    import uuid

    from safetensors.torch import save_file

    model = _unwrap(model)
    folder = _folder(path)
    state = model.state_dict() if state is None else state
    tensors = {k: v.detach().to("cpu", dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous()
               for k, v in state.items()}
    lost = [] if dtype is None else [k for k, v in tensors.items() if v.is_floating_point()
                                     and not torch.isfinite(v).all() and torch.isfinite(state[k]).all()]
    if lost:
        raise CheckpointError(f"{_names(lost)} overflow {dtype}: store the weights in a wider type")
    folder.mkdir(parents=True, exist_ok=True)
    save_id = uuid.uuid4().hex
    meta = model.cfg.to_json() | {"format": FORMAT, "version": VERSION, "save_id": save_id}
    if extra:
        meta["extra"] = extra
    try:
        text = json.dumps(meta, indent=1, sort_keys=False)
    except TypeError as e:
        raise CheckpointError(f"checkpoint extra information is not JSON-serialisable: {e}") from None
    tmp_w, tmp_c = folder / (WEIGHTS + ".tmp"), folder / (CONFIG + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT, "version": str(VERSION), "save_id": save_id})
    tmp_c.write_text(text + "\n", encoding="utf-8")
    tmp_w.replace(folder / WEIGHTS)
    tmp_c.replace(folder / CONFIG)
    return folder


def read_config(path: str | Path) -> tuple[ModelConfig, dict]:
    """The ``ModelConfig`` and the ``extra`` information of a checkpoint folder, validated."""
    folder = _folder(path)
    cfile = folder / CONFIG
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder {folder} not found")
    if not cfile.exists():
        raise CheckpointError(f"checkpoint {folder}: {CONFIG} is missing (a checkpoint is a folder with {CONFIG} "
                              f"and {WEIGHTS}, written by microturn.model.checkpoint.save)")
    try:
        meta = json.loads(cfile.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfile}: malformed JSON: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{cfile}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfile}: not a microturn model checkpoint (format is {meta.get('format')!r}, "
                              f"expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{cfile}: unsupported checkpoint version {meta.get('version')!r} "
                              f"(this microturn reads version {VERSION})")
    fields = LATER_FIELDS | {k: v for k, v in meta.items() if k not in _RESERVED}
    lacking = [k for k in ModelConfig.__dataclass_fields__ if k not in fields]
    if isinstance(fields.get("layout"), dict):
        lacking += [f"layout.{k}" for k in Layout.__dataclass_fields__ if k not in fields["layout"]]
    if lacking:
        raise CheckpointError(f"{cfile}: model config lacks fields: {', '.join(lacking)}")
    try:
        cfg = ModelConfig.from_json(fields)
    except (TypeError, ValueError, ArithmeticError) as e:
        raise CheckpointError(f"{cfile}: bad model config: {e}") from None
    for name in ("depth", "vocab_size", "n_experts", "top_k", "window", "pinned", "flow_width", "audio_conv"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CheckpointError(f"{cfile}: config field {name} must be a non-negative integer, got {v!r}")
    if not isinstance(cfg.hear_back, bool):
        raise CheckpointError(f"{cfile}: config field hear_back must be true or false, got {cfg.hear_back!r}")
    if cfg.depth < 1 or cfg.vocab_size < 1 or cfg.window < 1 or cfg.flow_width < 1:
        raise CheckpointError(f"{cfile}: config depth, vocab_size, window and flow_width must be >= 1")
    if cfg.n_experts and not (1 <= cfg.top_k <= cfg.n_experts):
        raise CheckpointError(f"{cfile}: top_k {cfg.top_k} must be between 1 and n_experts {cfg.n_experts}")
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{cfile}: \"extra\" must be an object, got {type(extra).__name__}")
    if "sampling" in extra:  # the checkpoint's own decoding settings (Sampling.of): checked now, not at a first step
        from .model import Sampling

        try:
            Sampling(**extra["sampling"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{cfile}: extra.sampling is not the model's decoding settings: {e}") from None
    return cfg, extra


def load(path: str | Path, device="cpu") -> InteractionModel:
    """Build the model a checkpoint folder describes and load its weights (eval mode, on ``device``)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    folder = _folder(path)
    cfg, extra = read_config(folder)
    wfile = folder / WEIGHTS
    if not wfile.exists():
        raise CheckpointError(f"checkpoint {folder}: {WEIGHTS} is missing")
    try:
        tensors = load_file(str(wfile), device="cpu")
        with safe_open(str(wfile), "pt") as f:
            save_id = (f.metadata() or {}).get("save_id")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{wfile}: cannot read the weights: {e}") from None
    config_id = json.loads((folder / CONFIG).read_text(encoding="utf-8")).get("save_id")
    if save_id != config_id:
        raise CheckpointError(f"checkpoint {folder}: {CONFIG} and {WEIGHTS} come from two different saves (one "
                              f"interrupted between its two files?); save the model again")
    with torch.device("meta"):  # the shapes first: a config far from its weights must not allocate a huge model
        expected = InteractionModel(cfg).state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_names(unexpected)}")
    for k in sorted(set(expected) & set(tensors)):
        a, b = tuple(tensors[k].shape), tuple(expected[k].shape)
        if a != b:
            problems.append(f"tensor {k} has shape {list(a)} in the file but the config needs {list(b)}")
        elif tensors[k].dtype != expected[k].dtype and not tensors[k].dtype.is_floating_point:
            problems.append(f"tensor {k} has dtype {tensors[k].dtype}, expected {expected[k].dtype}")
    if problems:
        raise CheckpointError(f"checkpoint {folder}: the weights do not match {CONFIG} "
                              f"(depth {cfg.depth}, d_model {cfg.d_model}, vocab {cfg.vocab_size}, "
                              f"experts {cfg.n_experts}): " + "; ".join(problems))
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # greedy decoding would stay silent for ever, sampling fail in the middle of a batch's tick
        raise CheckpointError(f"checkpoint {folder}: weights that are not finite (NaN or infinity): {_names(broken)}")
    model = InteractionModel(cfg)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    model.checkpoint_info = extra  # training step etc., for reports
    return model.to(device).eval()


def _names(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_default(device="cpu") -> InteractionModel:
    """The bundled model (``microturn/assets/model``)."""
    if not (DEFAULT_CHECKPOINT / CONFIG).exists():
        raise CheckpointError(f"no bundled model at {DEFAULT_CHECKPOINT}: train one with `microturn train` and "
                              f"copy its model folder there, or pass a checkpoint path")
    return load(DEFAULT_CHECKPOINT, device)
