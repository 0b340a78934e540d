"""A deterministic generated corpus with known near-duplicates, for dedup tests and benchmarks.

Documents are word streams drawn from a Zipf-like distribution over pseudo-English words (with
capitalized and punctuated variants, and paragraph breaks), so two independent documents share
almost no 5-gram while a copy shares them all. A share of the documents are copies of another
one with words substituted and deleted at a chosen rate. Built with numpy and pyarrow compute and
produced shard by shard (`synthetic_shards`), so a million documents fit in memory as token ids
and take about a minute.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

_CONSONANTS = np.array([*"bcdfghjklmnprstvwz", "ch", "sh", "th", "st", "tr", "pl"])
_VOWELS = np.array([*"aeiou", "ea", "ou", "ai"])
_PARAGRAPH = "\n\n"


def _vocabulary(size: int, rng: np.random.Generator) -> pa.Array:
    """`size` distinct pseudo-words of 1-4 syllables, then their variants (token id + k * size):
    "w,", "w.", "W", "“w”", "w’s" (web text is rarely pure ASCII), then a paragraph break."""
    syllables = np.char.add(_CONSONANTS[:, None], _VOWELS[None, :]).ravel()
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        count = 2 * size
        lengths = rng.choice([1, 2, 2, 3, 3, 4], count)
        parts = rng.integers(0, len(syllables), (count, 4))
        for n, row in zip(lengths, parts, strict=True):
            word = "".join(syllables[row[:n]])
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == size:
                    break
    variants = [[w + "," for w in words], [w + "." for w in words], [w.capitalize() for w in words]]
    variants += [[f"\u201c{w}\u201d" for w in words], [w + "\u2019s" for w in words]]
    return pa.array(words + [v for variant in variants for v in variant] + [_PARAGRAPH])


class _Tokens:
    def __init__(self, vocab_size: int, rng: np.random.Generator):
        self.vocab_size, self.rng = vocab_size, rng

    def draw(self, count: int) -> np.ndarray:
        """Token ids: word rank log-uniform (P(rank r) ~ 1/r, Zipf), 20% variants, 1% paragraph breaks."""
        rng, size = self.rng, self.vocab_size
        rank = np.exp(rng.random(count, np.float32) * np.float32(np.log(size + 1))).astype(np.int32) - 1
        u = rng.random(count, np.float32)
        # plain 80%, "w," 7%, "w." 5%, "W" 5%, "“w”" 1.5%, "w’s" 1.5%
        variant = (u > 0.80).astype(np.int32) + (u > 0.87) + (u > 0.92) + (u > 0.97) + (u > 0.985)
        tokens = np.minimum(rank, size - 1) + variant * size
        tokens[(u > 0.92) & (u < 0.93)] = 6 * size  # 1% paragraph breaks (replacing capitalized words)
        return tokens


def _gather(tokens: np.ndarray, offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The token runs of documents `docs`, concatenated, with their lengths."""
    lengths = offsets[docs + 1] - offsets[docs]
    starts = np.repeat(offsets[docs], lengths)
    position = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return tokens[starts + position], lengths


def synthetic_shards(
    n_docs: int,
    shards: int = 1,
    *,
    seed: int = 0,
    dup_fraction: float = 0.1,
    edit_rates: tuple[float, ...] = (0.0, 0.01, 0.03),
    mean_words: int = 300,
    vocab_size: int = 30_000,
) -> Iterator[pa.Table]:
    """`shards` tables of doc_id, url, text, plus the truth: `family` (the row number of the
    original a copy was made from, its own for an original) and `edit_rate` (share of words
    substituted; a third as many deleted). Copies land in any shard. Same arguments, same tables."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(vocab_size, rng)
    draw = _Tokens(vocab_size, rng)
    n_dups = round(n_docs * dup_fraction)
    n_orig = n_docs - n_dups
    lengths = np.clip(rng.lognormal(np.log(mean_words) - 0.32, 0.8, n_orig), 10, 20 * mean_words).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = draw.draw(int(offsets[-1]))
    # Row r of the corpus is original order[r] if order[r] < n_orig, else copy order[r] - n_orig.
    order = rng.permutation(n_docs)
    # One spare entry at the end, so indexing by copy number is safe when there are no copies.
    source = np.append(rng.integers(0, max(n_orig, 1), n_dups), 0)
    rates = np.append(np.asarray(edit_rates, np.float64)[rng.integers(0, len(edit_rates), n_dups)], 0.0)
    row_of_original = np.empty(n_docs, np.int64)
    row_of_original[order] = np.arange(n_docs)
    bounds = np.linspace(0, n_docs, shards + 1).round().astype(np.int64)
    for lo, hi in itertools.pairwise(bounds):
        rows = order[lo:hi]
        is_copy = rows >= n_orig
        copy = np.where(is_copy, rows - n_orig, n_dups)
        docs = np.where(is_copy, source[copy], rows)
        doc_tokens, doc_lengths = _gather(tokens, offsets, docs)
        # Copies: each token substituted with p = rate and deleted with p = rate / 3.
        rate = np.repeat(rates[copy], doc_lengths)
        u = rng.random(len(doc_tokens))
        substitute = u < rate
        doc_tokens[substitute] = draw.draw(int(substitute.sum()))
        keep = ~((u >= rate) & (u < rate * 4 / 3))
        doc_index = np.repeat(np.arange(len(rows)), doc_lengths)
        doc_lengths = np.bincount(doc_index[keep], minlength=len(rows))
        words = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(doc_lengths)])), vocab.take(doc_tokens[keep]))
        family = row_of_original[docs]
        yield pa.table(
            {
                "doc_id": pa.array([xxhash.xxh128_hexdigest(f"synthetic:{seed}:{r}".encode()) for r in range(lo, hi)]),
                "url": pa.array([f"https://site{r % 997}.example/page/{r}" for r in range(lo, hi)]),
                "text": pc.binary_join(words, " "),
                "family": pa.array(family, pa.int64()),
                "edit_rate": pa.array(rates[copy], pa.float32()),
            }
        )


def synthetic_corpus(n_docs: int, **options) -> pa.Table:
    """The whole generated corpus as one table (see `synthetic_shards`)."""
    return pa.concat_tables(list(synthetic_shards(n_docs, 1, **options)))
