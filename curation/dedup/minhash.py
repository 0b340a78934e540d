"""MinHash signatures of documents, columnar, and the signature stage (step 1 of near-dup dedup).

How a batch of texts becomes signatures, without a Python loop over words or shingles:
1. split on white space; dictionary-encode the tokens so each distinct token of the batch is
   normalized (`normalize.normalize_words`) and hashed once (simple tabulation, vectorized);
2. word 5-grams: the hash of the n-gram starting at word i is the splitmix64 finalizer of
   sum_k P_k * h[i+k] (uint64 arithmetic wraps), computed for every position at once; a document
   shorter than n words has one shingle made of all its words; one without words has no signature;
3. the K = bands x rows hash functions are h_j(x) = a_j * x mod 2^64 with random odd a_j (a
   multiplicative family: the shingle hashes are already uniformly mixed, so one multiply is
   enough; tests check collision rates against exact Jaccard and the LSH S-curve); value j of a
   signature is the minimum of h_j over the document's shingles, by `np.minimum.reduceat`, one
   function at a time over a cache-sized chunk of shingles. 32-bit hashes keep the top 32 bits.

A signature shard keeps, per document, one 64-bit hash per band (the band's `rows` values mixed
into one: equal band hashes <=> equal band, up to 2^-64) for LSH, and a sketch to estimate the
Jaccard similarity of LSH candidates: one-permutation hashing (Li, Owen & Zhang 2012), the
smallest shingle hash in each of `sketch_bins` bins (by the hash's top bits), 16 bits of it kept
(b-bit minwise hashing, Li & König 2010), 0 for an empty bin. Estimate: bins that agree / bins
not empty in both. With 256 bins it is more precise than the 112 MinHash values (most web pages
have about as many shingles as bins, so it is close to an exact count) and costs one pass.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import layout, storage
from curation.config import BuildConfig, DedupConfig
from curation.dedup.normalize import WORDS_VERSION, normalize_words
from curation.stats import Progress, StageStats

STAGE = "signatures"
SIGNATURE_VERSION = 1  # bump when the hashing below changes: old index entries are then never compared
_BATCH_ROWS = 4_096
_BATCH_TEXT_BYTES = 32 * 2**20  # a batch's working arrays are ~10x its text: bound them by bytes too
_CHUNK_SHINGLES = 32_768  # ~256 KiB of uint64 per permutation pass: stays in L2
_U64 = np.uint64
_TABLE_POSITIONS = 64  # word hash table: 64 byte positions x 256 byte values (128 KiB, stays in cache)


def band_column(band: int) -> str:
    return f"band_{band:02d}"


def signature_schema(dedup: DedupConfig) -> pa.Schema:
    """doc_id, one uint64 hash per band, and the similarity sketch (`sketch_bins` x uint16)."""
    return pa.schema(
        [pa.field("doc_id", pa.string(), nullable=False)]
        + [pa.field(band_column(b), pa.uint64(), nullable=False) for b in range(dedup.bands)]
        + [pa.field("sketch", pa.list_(pa.uint16(), dedup.sketch_bins), nullable=False)]
    )


def params_key(dedup: DedupConfig) -> str:
    """Everything that changes a signature: signatures with different keys are never compared."""
    d, version = dedup, f"{WORDS_VERSION}.{SIGNATURE_VERSION}"
    return f"w{version}-n{d.ngram}-b{d.bands}x{d.rows_per_band}-h{d.hash_bits}-s{d.seed}-k{d.sketch_bins}"


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, in place: spreads every input bit over the whole word."""
    x ^= x >> _U64(30)
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


@dataclass(frozen=True)
class Signatures:
    """Signatures of the documents of a batch that have words (`has_words` marks which)."""

    values: np.ndarray  # (K, n_with_words) uint64, one row per hash function
    sketch: np.ndarray  # (n_with_words, sketch_bins) uint16
    has_words: np.ndarray  # (n_docs,) bool


class MinHasher:
    """MinHash with `bands x rows` hash functions over word n-grams; same seed, same signatures."""

    def __init__(
        self, ngram: int = 5, bands: int = 14, rows: int = 8, hash_bits: int = 64, seed: int = 1, sketch_bins: int = 256
    ):
        self.ngram, self.bands, self.rows, self.hash_bits, self.seed = ngram, bands, rows, hash_bits, seed
        if sketch_bins & (sketch_bins - 1):
            raise ValueError(f"sketch_bins must be a power of two, not {sketch_bins}")
        self.sketch_bins = sketch_bins
        self.num_perm = bands * rows
        rng = np.random.default_rng([seed, 0x5EED])
        odd = lambda n: rng.integers(0, 2**63, n, dtype=_U64) * _U64(2) + _U64(1)  # noqa: E731
        self._perm = odd(self.num_perm)
        self._shingle_coef = odd(ngram)
        self._band_coef = odd(rows)
        self._word_table = rng.integers(0, 2**64 - 1, _TABLE_POSITIONS * 256, dtype=_U64, endpoint=True)

    @classmethod
    def from_config(cls, dedup: DedupConfig) -> MinHasher:
        return cls(dedup.ngram, dedup.bands, dedup.rows_per_band, dedup.hash_bits, dedup.seed, dedup.sketch_bins)

    # -- words and shingles ---------------------------------------------------------------------

    def word_hashes(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(uint64 hash of every normalized word, in order; int64 offsets of each text's words)."""
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        tokens = pc.utf8_split_whitespace(texts.fill_null(""))
        token_offsets = tokens.offsets.to_numpy().astype(np.int64)
        token_offsets -= token_offsets[0]
        encoded = pc.dictionary_encode(tokens.flatten())
        word_hash, word_length = self._hash_words(normalize_words(encoded.dictionary))
        index = encoded.indices.to_numpy()
        is_word = (word_length > 0)[index]
        hashes = np.take(word_hash, index)
        if is_word.all():
            return hashes, token_offsets
        kept_before = np.concatenate([[0], np.cumsum(is_word)])
        return hashes[is_word], kept_before[token_offsets]

    def _hash_words(self, words: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(64-bit hash, byte length) of each word, by simple tabulation hashing: the XOR of one
        random table entry per (position, byte). It is 3-independent and, unlike a polynomial
        hash, good enough for min-wise hashing (Pătraşcu & Thorup 2012); being columnar it costs
        a few numpy passes over the batch's distinct words instead of a Python call per word."""
        words = words.cast(pa.large_binary())
        offsets = np.frombuffer(words.buffers()[1], np.int64, len(words) + 1, words.offset * 8)
        lengths = np.diff(offsets)
        hashes = np.zeros(len(words), _U64)
        if not lengths.sum():
            return hashes, lengths
        data = np.frombuffer(words.buffers()[2], np.uint8, int(offsets[-1] - offsets[0]), int(offsets[0]))
        starts = offsets[:-1] - offsets[0]
        position = np.arange(len(data)) - np.repeat(starts, lengths)
        entries = self._word_table[(position % _TABLE_POSITIONS) * 256 + data]
        nonempty = lengths > 0
        hashes[nonempty] = np.bitwise_xor.reduceat(entries, starts[nonempty])
        # Positions wrap after _TABLE_POSITIONS bytes: mix the length in for the (rare) longer tokens.
        long = lengths > _TABLE_POSITIONS
        if long.any():
            hashes[long] = _mix(hashes[long] ^ (lengths[long].astype(_U64) * _U64(0x9E3779B97F4A7C15)))
        return hashes, lengths

    def shingles(self, hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint64 hash of every word n-gram, offsets of each document's n-grams)."""
        n, coef = self.ngram, self._shingle_coef
        lengths = np.diff(offsets)
        counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
        shingle_offsets = np.concatenate([[0], np.cumsum(counts)])
        m = len(hashes)
        padded = np.concatenate([hashes, np.zeros(n - 1, _U64)])
        sums = padded[:m] * coef[0]
        for k in range(1, n):
            sums += padded[k : k + m] * coef[k]
        # An n-gram may not run past its document's end: the last n-1 starts of each are invalid.
        valid = np.ones(m, bool)
        ends = offsets[1:]
        for k in range(1, n):
            valid[ends[lengths >= k] - k] = False
        short = (lengths > 0) & (lengths < n)
        if not short.any():
            return _mix(sums[valid]), shingle_offsets
        # Documents shorter than n words: one shingle of all their words (same formula, fewer terms).
        starts = offsets[:-1][short]
        short_sums = np.zeros(len(starts), _U64)
        for k in range(n - 1):
            has_k = lengths[short] > k
            short_sums[has_k] += hashes[starts[has_k] + k] * coef[k]
        out = np.empty(shingle_offsets[-1], _U64)
        is_long_slot = np.ones(len(out), bool)
        is_long_slot[shingle_offsets[:-1][short]] = False
        out[is_long_slot] = sums[valid]
        out[~is_long_slot] = short_sums
        return _mix(out), shingle_offsets

    # -- signatures -----------------------------------------------------------------------------

    def signatures(self, texts: pa.Array | pa.ChunkedArray) -> Signatures:
        hashes, offsets = self.word_hashes(texts)
        shingles, shingle_offsets = self.shingles(hashes, offsets)
        has_words = np.diff(shingle_offsets) > 0
        starts = shingle_offsets[:-1][has_words]
        values = np.empty((self.num_perm, len(starts)), _U64)
        # Chunks of whole documents of ~_CHUNK_SHINGLES shingles, so each pass stays in cache.
        cuts = np.unique(np.concatenate([np.searchsorted(starts, np.arange(0, len(shingles), _CHUNK_SHINGLES)), [len(starts)]]))
        buffer = np.empty(max(_CHUNK_SHINGLES, 1), _U64)
        for lo, hi in itertools.pairwise(cuts):
            first = starts[lo]
            last = starts[hi] if hi < len(starts) else len(shingles)
            chunk = shingles[first:last]
            if len(buffer) < len(chunk):
                buffer = np.empty(len(chunk), _U64)
            work = buffer[: len(chunk)]
            local = starts[lo:hi] - first
            for j, a in enumerate(self._perm):
                np.multiply(chunk, a, out=work)
                np.minimum.reduceat(work, local, out=values[j, lo:hi])
        if self.hash_bits == 32:
            values >>= _U64(32)
        return Signatures(values, self.sketch(shingles, shingle_offsets[np.concatenate([has_words, [True]])]), has_words)

    def band_hashes(self, values: np.ndarray) -> np.ndarray:
        """(bands, n) uint64: each band's `rows` values mixed into one hash."""
        out = np.empty((self.bands, values.shape[1]), _U64)
        for b in range(self.bands):
            band = values[b * self.rows : (b + 1) * self.rows]
            acc = band[0] * self._band_coef[0]
            for r in range(1, self.rows):
                acc += band[r] * self._band_coef[r]
            out[b] = _mix(acc)
        return out

    def sketch(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(n, sketch_bins) uint16 one-permutation sketch of each document (offsets: n + 1, none empty)."""
        n, k = len(offsets) - 1, self.sketch_bins
        doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
        slot = doc * k + (shingles >> _U64(64 - k.bit_length() + 1)).astype(np.int64)
        smallest = np.full(n * k, np.iinfo(np.uint64).max, _U64)
        np.minimum.at(smallest, slot, shingles)
        # 16 low bits of the smallest hash of each bin (independent of its rank), never 0 = empty.
        out = np.maximum(smallest & _U64(0xFFFF), _U64(1)).astype(np.uint16)
        out[smallest == np.iinfo(np.uint64).max] = 0
        return out.reshape(n, k)


def estimate_jaccard(sketch_a: np.ndarray, sketch_b: np.ndarray) -> np.ndarray:
    """Jaccard similarity from one-permutation sketches (rows of `a` against rows of `b`).

    Bins empty in both say nothing; a 16-bit value agrees by chance with probability 2^-16.
    """
    agree = ((sketch_a == sketch_b) & (sketch_a != 0)).sum(axis=-1)
    informative = ((sketch_a != 0) | (sketch_b != 0)).sum(axis=-1)
    return agree / np.maximum(informative, 1)


def signature_table(doc_ids: pa.Array, texts: pa.Array, hasher: MinHasher, schema: pa.Schema) -> pa.Table:
    """The signature rows of the documents that have words."""
    sig = hasher.signatures(texts)
    keep = pa.array(sig.has_words)
    columns: dict[str, pa.Array] = {"doc_id": pc.filter(doc_ids, keep)}
    for b, hashes in enumerate(hasher.band_hashes(sig.values)):
        columns[band_column(b)] = pa.array(hashes, pa.uint64())
    columns["sketch"] = pa.FixedSizeListArray.from_arrays(pa.array(sig.sketch.reshape(-1), pa.uint16()), hasher.sketch_bins)
    return pa.table(columns).cast(schema)


def text_batches(table: pa.Table, max_rows: int = _BATCH_ROWS, max_bytes: int = _BATCH_TEXT_BYTES) -> Iterator[pa.Table]:
    """Slices of `table` of at most `max_rows` rows and about `max_bytes` of text (at least one row)."""
    sizes = np.cumsum(pc.binary_length(table.column("text")).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64))
    start = 0
    while start < table.num_rows:
        base = sizes[start - 1] if start else 0
        end = min(int(np.searchsorted(sizes, base + max_bytes, side="right")), start + max_rows, table.num_rows)
        end = max(end, start + 1)
        yield table.slice(start, end - start)
        start = end


def compute_signatures(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Step 1 (mapped per shard): documents (doc_id, text) -> one signature shard at `output`.

    Documents without a single word get no signature (nothing to compare; the filter stage drops
    them by length); they are counted in rows_in and rows_out, like every document this step reads.
    """
    started = time.monotonic()
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    progress = Progress(stats)
    hasher = MinHasher.from_config(cfg.dedup)
    schema = signature_schema(cfg.dedup)
    with storage.TableWriter(output, schema) as writer:
        for uri in inputs:
            table = storage.read_table(uri, columns=["doc_id", "text"])
            stats.bytes_in += storage.size(uri)
            for batch in text_batches(table):
                writer.write(signature_table(batch.column("doc_id"), batch.column("text"), hasher, schema))
                stats.rows_in += batch.num_rows
                progress.tick()
    layout.finish_shard(stats, writer, output, started)
    return stats
