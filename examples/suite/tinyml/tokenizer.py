"""A word-level tokenizer with a frequency-built vocabulary and special tokens."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def split(text: str) -> list[str]:
    """Lower-case words (keeping contractions) and single punctuation marks."""
    return _TOKEN.findall(text.lower())


class Vocab:
    """Bidirectional token <-> id map; ids 0..3 are the special tokens."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.itos: list[str] = list(SPECIALS)
        for tok in tokens:
            if tok not in SPECIALS:
                self.itos.append(tok)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate tokens in vocabulary")

    @classmethod
    def build(cls, corpus: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Most frequent tokens first, ties broken alphabetically so builds are reproducible."""
        counts = Counter(tok for line in corpus for tok in split(line))
        ranked = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size] if max_size is not None else ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = [self.stoi.get(tok, self.stoi[UNK]) for tok in split(text)]
        return [self.stoi[BOS], *ids, self.stoi[EOS]] if add_special else ids

    def decode(self, ids: Sequence[int]) -> str:
        words = [self.itos[i] for i in ids if self.itos[i] not in (PAD, BOS, EOS)]
        text = " ".join(words)
        return re.sub(r" ([^\sa-z0-9<])", r"\1", text)


def pad_batch(batch: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None) -> list[list[int]]:
    """Right-pad (or truncate) every sequence to ``length`` (default: the longest)."""
    width = length if length is not None else max((len(s) for s in batch), default=0)
    return [list(s[:width]) + [pad_id] * (width - len(s[:width])) for s in batch]
