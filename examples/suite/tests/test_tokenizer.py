"""Tokenizer splitting, vocabulary building, encoding and padding."""

from __future__ import annotations

import random

import pytest

from tinyml.tokenizer import BOS, EOS, PAD, UNK, Vocab, pad_batch, split

CORPUS = [
    "The cat sat on the mat.",
    "The dog sat on the log!",
    "A cat and a dog don't fight.",
]


@pytest.mark.hourly
def test_encode_decode_roundtrip():
    """Decoding an encoding gives back the normalised sentence."""
    vocab = Vocab.build(CORPUS)
    ids = vocab.encode("The cat sat on the log.")
    assert ids[0] == vocab.stoi[BOS] and ids[-1] == vocab.stoi[EOS]
    assert vocab.decode(ids) == "the cat sat on the log."


@pytest.mark.hourly
def test_unknown_words_map_to_unk():
    """Out-of-vocabulary words encode to the <unk> id."""
    vocab = Vocab.build(CORPUS)
    assert vocab.encode("zebra cat", add_special=False) == [vocab.stoi[UNK], vocab.stoi["cat"]]


@pytest.mark.daily
def test_vocab_is_frequency_ranked_and_reproducible():
    """Specials come first, then tokens by descending count with alphabetical ties."""
    vocab = Vocab.build(CORPUS)
    assert vocab.itos[:4] == [PAD, UNK, BOS, EOS]
    assert vocab.itos[4] == "the"
    assert Vocab.build(reversed(CORPUS)).itos == vocab.itos


@pytest.mark.daily
def test_min_freq_and_max_size_limit_the_vocab():
    """Rare tokens are dropped and the size cap is honoured."""
    vocab = Vocab.build(CORPUS, min_freq=2)
    assert "fight" not in vocab.stoi and "sat" in vocab.stoi
    assert len(Vocab.build(CORPUS, max_size=3)) == 4 + 3


@pytest.mark.daily
def test_pad_batch_pads_and_truncates():
    """Sequences are right-padded to the longest, or cut to an explicit length."""
    assert pad_batch([[5, 6, 7], [8]]) == [[5, 6, 7], [8, 0, 0]]
    assert pad_batch([[5, 6, 7], [8]], length=2) == [[5, 6], [8, 0]]
    assert pad_batch([]) == []


@pytest.mark.daily
@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Don't stop", ["don't", "stop"]),
        ("a,b", ["a", ",", "b"]),
        ("  GPU-42  ", ["gpu", "-", "42"]),
    ],
)
def test_split_handles_contractions_and_punctuation(text, tokens):
    """Contractions stay whole; punctuation becomes its own token."""
    assert split(text) == tokens


@pytest.mark.slow
def test_vocab_on_large_generated_corpus():
    """A 400k-word Zipf-like corpus builds a vocabulary ranked by frequency."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    lines = [" ".join(rng.choices(words, weights, k=50)) for _ in range(8000)]
    vocab = Vocab.build(lines, min_freq=2)
    assert vocab.itos[4] == "w0"
    assert len(vocab.encode(lines[0], add_special=False)) == 50
