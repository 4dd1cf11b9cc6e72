"""Text tokenizer for everything the model reads and writes: typed text, background results, its own words.

Choice: a byte-level BPE (Hugging Face ``tokenizers``) trained on the task language and filler talk, to a target
of 2048 tokens (``VOCAB_SIZE``); the small corpus ran out of merges first: the bundled vocabulary has 1,350, special
tokens included.
- Byte level: every UTF-8 string round-trips exactly (256 byte tokens are always in the vocabulary), so typed text
  in any language, emoji or Spanish accents never hits an unknown token.
- BPE trained on our own corpus: the task words ("bingo", " seventy", " manzana") are single tokens, so an answer
  costs one or two output slots of a micro-turn, and the output cap stays small.
- A small vocabulary keeps the embedding and text head cheap for a CPU model.
The special tokens have fixed ids 0..186 (see ``SPECIALS``): the stream's controls, then the agent's silent tokens,
written in its out stream but never said: ``<note>`` (the next token is a note to itself, e.g. the word a pending
instruction asks for), the timers ``<t1>`` .. ``<t149>`` (micro-turns left until something it was asked to do at
a time) and one heard token per cue-list word, ``<heard:apple>`` .. ``<heard:pirate>`` (``CUE_WORDS``: while it
waits on a cue, each cue-list word the user says, so that whether it was the cue is read straight off one token it
wrote and the response can follow in the next slot). Sessions 11-13 wrote ``<heard> apple``, two tokens, and
acted a micro-turn later: the decision sat two hops from the heard word, and their models never read it
(``scripts/cue_report.py``). The first heard token took the id of ``<heard>``, itself the unused ``<t150>``'s.
The file lives at ``microturn/assets/tokenizer.json`` and is rebuilt with ``microturn tokenizer`` (deterministic
for the corpus).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

MAX_TIMER = 149  # micro-turns a timer counts down from at most (just under 30 s)
# The words a cue may be (the task language's cue list, shared/spec/tasks.md): each has its own heard token.
CUE_WORDS = ("apple banana orange river mountain window tiger guitar pencil rocket garden yellow purple camera dragon "
             "silver winter summer coffee button doctor island monkey planet rabbit candle bottle forest butter "
             "pirate").split()
SPECIALS = ("<pad>", "<eot>", "<dlg>", "</dlg>", "<typed>", "<bg>", "<sil>", "<note>") + tuple(
    f"<t{k}>" for k in range(1, MAX_TIMER + 1)) + tuple(f"<heard:{w}>" for w in CUE_WORDS)
PAD, EOT, DLG, DLG_END, TYPED, BG, SIL, NOTE = range(8)
HEARD = NOTE + MAX_TIMER + 1  # <heard:apple>, the first heard token


def check_text(text) -> str:
    """``text`` if the tokenizer can take it: a ``str`` of real characters. JSON can carry a lone surrogate
    (``"\\ud800"``), which is none; the tokenizer would refuse it inside a tick that steps other sessions too, so
    every way text comes in checks it first. ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, not {type(text).__name__}: {text!r:.100}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text is not valid Unicode (a lone surrogate escape?): {e}") from None
    return text


def timer(k: int) -> int:
    """The id of the timer token ``<tk>``: k micro-turns left (clipped to 1 .. MAX_TIMER)."""
    return NOTE + min(max(int(k), 1), MAX_TIMER)


def is_timer(token_id):
    """Whether a token id is a timer (ints, numpy arrays and tensors alike)."""
    return (token_id > NOTE) & (token_id <= NOTE + MAX_TIMER)


def heard(word: str) -> int:
    """The id of the heard token ``<heard:word>`` of a cue-list word (any case, trailing punctuation ignored)."""
    name = word.lower().strip(".,!?")
    if name not in CUE_WORDS:
        raise ValueError(f"{word!r} is not a cue-list word; heard tokens exist for {', '.join(CUE_WORDS)}")
    return HEARD + CUE_WORDS.index(name)


def is_heard(token_id):
    """Whether a token id is a heard token (ints, numpy arrays and tensors alike)."""
    return (token_id >= HEARD) & (token_id < HEARD + len(CUE_WORDS))


DEFAULT_PATH = Path(__file__).resolve().parent.parent / "assets" / "tokenizer.json"
VOCAB_SIZE = 2048


class Tokenizer:
    """Encode text to ids and back; words are encoded with a leading space so each word's first token marks it."""

    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        for i, s in enumerate(SPECIALS):
            if hf.token_to_id(s) != i:
                raise ValueError(f"tokenizer file is not a microturn tokenizer: special {s!r} must have id {i}")
        self.vocab_size = hf.get_vocab_size()
        hf.encode_special_tokens = True  # typed "<eot>" is text, never a control token (and round-trips)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> "Tokenizer":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"tokenizer file {path} not found; build it with `microturn tokenizer`")
        return cls(HFTokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids if int(i) >= len(SPECIALS)], skip_special_tokens=False)

    def encode_word(self, word: str) -> list[int]:
        """A word as the model says it: with its leading space."""
        return self.encode(" " + word.strip())

    def starts_word(self, token_id: int) -> bool:
        """True when the token begins a new word (byte-level BPE marks a leading space with 'Ġ')."""
        return token_id >= len(SPECIALS) and self.hf.id_to_token(int(token_id)).startswith("Ġ")

    def token(self, token_id: int) -> str:
        return self.hf.id_to_token(int(token_id))

    def show(self, ids) -> str:
        """Token ids as a person reads them: special tokens by name, text as text ("<t12> <note> bingo")."""
        return "".join(f" {self.token(i)}" if i < len(SPECIALS) else self.hf.decode([i])
                       for i in map(int, ids)).strip()


def train(lines, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train the byte-level BPE on an iterable of lines."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Each line is seen both as it is and with a leading space, so words get their in-sentence form.
    hf.train_from_iterator((v for line in lines for v in (line, " " + line)), trainer=trainer)
    return Tokenizer(hf)


@lru_cache(maxsize=None)
def default_tokenizer() -> Tokenizer:
    return Tokenizer.load(DEFAULT_PATH)
