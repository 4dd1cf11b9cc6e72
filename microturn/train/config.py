"""What a training run is made of: ``TrainConfig``, one field per ``microturn train`` option, with its help.

Kept apart from ``train.loop`` (and torch), so the CLI can list the options without importing the training code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields


def _opt(default, text: str):
    """A TrainConfig field with its ``microturn train --help`` line (the CLI makes one option per field)."""
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    data: str = _opt("data/shards/train", "training shards (a folder of shard parts: `microturn synth --shards`)")
    val: str | None = _opt("data/shards/val", "held-out shards scored at every evaluation ('': none)")
    out: str = _opt("runs/cpu", "the run's folder: model, train_state, log.jsonl, TensorBoard logs, curves")
    preset: str = _opt("cpu", "model size (`microturn model info` lists the presets); ignored with --init")
    steps: int = _opt(20000, "optimiser steps of the schedule")
    batch: int = _opt(8, "sessions per step and process")
    accum: int = _opt(1, "run each step's batch in this many pieces, one after another, adding up their gradients "
                         "(the same sessions and step in about 1/accum of the activations' memory; train.loop.pieces)")
    lr: float = _opt(2e-3, "peak learning rate (AdamW)")
    min_lr: float = _opt(1e-4, "learning rate at the end of the cosine decay")
    warmup: int = _opt(300, "steps of linear warm-up")
    weight_decay: float = _opt(0.05, "AdamW weight decay (matrices only)")
    clip: float = _opt(1.0, "gradient-norm clip")
    speak_weight: float = _opt(3.0, "text-loss weight of the out tokens but <eot>, and of the <eot> that declines to "
                                    "act on a heard token (model.out_weights; any other <eot> weighs 1)")
    recap_weight: float = _opt(1.0, "times speak_weight for the out tokens that repeat what was written "
                                    "(layout.recaps)")
    early_listen: int = _opt(0, "also train the listening head on the audio tokens after this many blocks (0: off)")
    task_listen: float = _opt(1.0, "weight of the task words (data.language.task_words) in the listening loss")
    listen_scale: float = _opt(0.5, "weight of the listening losses (the head's and --early-listen's) in the loss "
                                    "trained on, against the text and flow losses (1 each)")
    eval_every: int = _opt(250, "steps between evaluations on --val")
    ckpt_every: int = _opt(250, "steps between checkpoints (model and train_state)")
    eval_batches: int = _opt(8, "batches per evaluation")
    seed: int = _opt(0, "seed of the batches and of a new model's weights")
    fsdp: bool = _opt(False, "shard the model and optimiser over the torchrun processes (FSDP2; the large presets)")
    threads: int = _opt(0, "torch threads on CPU (0: leave the default)")
    workers: int = _opt(0, "processes that make batches ahead of the training step (0: in the training process)")
    stop_at: int = _opt(0, "stop (with a checkpoint) at this step of the schedule; the same command resumes "
                           "(0: run all)")
    augment: bool = _opt(True, "alter the input audio and shift the clock at random (train.data); never in evaluation")
    eq: float = _opt(0.0, "unless --no-augment, half the sessions heard through a random equaliser of up to this many "
                          "levels (6 dB each) up or down (train.data.equalise; 0: off)")
    band: float = _opt(0.0, "unless --no-augment, this share of the sessions heard through a random band, as a "
                            "telephone or 8 kHz audio leaves it: channels above 3-7 kHz and below 80-400 Hz fall off to "
                            "a noise floor (train.data.band_limit; 0: off)")
    mix: str = _opt("", "family weights, e.g. 'timespeak=3,cuespeak=2' (families not named weigh 1); evaluation "
                        "mixes evenly")
    curriculum: float = _opt(0.3, "the greatest difficulty of the sessions drawn at the schedule's start, rising "
                                  "with its progress (train.data.Curriculum; 1: every session from the start)")
    conversations: float = _opt(0.0, "share of batches whose items are several sessions in a row (up to the window)")
    openings: float = _opt(0.0, "share of batches whose items are sessions' first 4-9 s, where instructions are heard")
    bucket: int = _opt(1, "sort the sessions drawn for this many consecutive steps by length and batch neighbours "
                          "(train.data.StepBatches: less padding, the same sessions; 1: off)")
    init: str = _opt("", "start from this checkpoint's weights (its architecture; a new optimiser, schedule and "
                         "curriculum); ignored when --out holds a run to resume")
    audio_conv: int = _opt(0, "convolution layers in the audio front-end (model.embed.FrameConv); an --init model "
                              "with fewer is given the rest, each starting at zero, so it starts as it was; fewer "
                              "are refused (0: the preset's, or the --init model's)")
    hear_back: bool = _opt(False, "feed each audio token the word the listening head heard a micro-turn before "
                                  "(model.embed.InputEmbed), added to an --init model without it, starting at zero")
    added_lr: float = _opt(1.0, "learning rate of the weights an --init model lacks (--audio-conv, --hear-back), as a "
                                "multiple of the schedule's: weights that start at zero learn little at a "
                                "fine-tune's rate")

    def check(self) -> None:
        """Refuse options no run can use, before anything is read or written: a ValueError naming the option.

        (What depends on the model, --early-listen's greatest block count, say, is checked once the model is known.)
        """
        for f in fields(self):  # every number a finite one: a NaN learning rate or weight trains NaN weights
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{option(f.name)} must be a finite number, got {v}")
        for name in ("data", "out"):
            if not getattr(self, name):
                raise ValueError(f"{option(name)} must name a folder")
        at_least = {"steps": 1, "batch": 1, "accum": 1, "eval_every": 1, "ckpt_every": 1, "eval_batches": 1,
                    "bucket": 1, "warmup": 0, "seed": 0, "threads": 0, "workers": 0, "stop_at": 0, "early_listen": 0,
                    "audio_conv": 0}
        for name, least in at_least.items():
            if getattr(self, name) < least:
                raise ValueError(f"{option(name)} must be >= {least}, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "speak_weight", "recap_weight", "listen_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{option(name)} must be 0 or more, got {getattr(self, name)}")
        if self.accum > self.batch:
            raise ValueError(f"{option('accum')} cuts each step's batch of {self.batch} sessions into pieces: at most "
                             f"{self.batch}, got {self.accum}")
        if self.clip <= 0:
            raise ValueError(f"{option('clip')} must be a positive gradient norm, got {self.clip}")
        if self.task_listen <= 0:
            raise ValueError(f"{option('task_listen')} must be a positive weight, got {self.task_listen}")
        if self.added_lr <= 0:
            raise ValueError(f"{option('added_lr')} must be a positive multiple of the learning rate, got "
                             f"{self.added_lr}")
        if self.curriculum < 0:
            raise ValueError(f"{option('curriculum')} is a session difficulty, 0 or more (1 or more: all), got "
                             f"{self.curriculum}")
        for name in ("conversations", "openings"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{option(name)} is a share of the batches, from 0 to 1, got {getattr(self, name)}")
        if not 0 <= self.band <= 1:
            raise ValueError(f"{option('band')} is a share of the sessions, from 0 to 1, got {self.band}")
        from ..codecs import dmel  # (here, not above: the CLI lists the options without torch)

        if not 0 <= self.eq <= dmel.N_BINS - 1:
            raise ValueError(f"{option('eq')} is an equaliser depth in dMel levels, from 0 (off) to "
                             f"{dmel.N_BINS - 1}, got {self.eq}")
        from .data import parse_mix

        try:
            parse_mix(self.mix)
        except ValueError as e:
            raise ValueError(f"{option('mix')}: {e}") from None
        if not self.init:  # (with --init the model is the checkpoint's)
            from ..model.config import PRESETS

            if self.preset not in PRESETS:
                raise ValueError(f"{option('preset')}: unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")


def option(name: str) -> str:
    """How a TrainConfig field is given: its ``microturn train`` option, with the field's own name when it differs
    (train() is called from Python too)."""
    flag = "--" + name.replace("_", "-")
    return flag if "_" not in name else f"{flag} ({name})"
