"""Gopher quality, Gopher repetition and C4-style lexicon signals, computed on Arrow columns.

Every signal is computed for a whole batch at once with pyarrow compute kernels and numpy
(`bincount` over list parent indices), never with a Python loop per document. Thresholds
follow Gopher (Rae et al. 2021, appendix A) as published in datatrove's GopherQualityFilter and
GopherRepetitionFilter; the lexicon rule is C4's "bad words" rule with a configurable list.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.config import HeuristicsConfig
from curation.schema import HEURISTIC_SIGNALS

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
BULLETS = ("•", "●", "○", "▪", "◦", "-", "*", "·", "–")


def _per_doc(parents: np.ndarray, values: np.ndarray | None, n_docs: int) -> np.ndarray:
    """Sum `values` (or count rows) per document, given each row's parent document index."""
    return np.bincount(parents, weights=values, minlength=n_docs)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num), dtype=np.float64), where=den > 0)


def _group_max_repeats(parents: np.ndarray, keys: pa.Array, n_docs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For (document, key) pairs: per document, the repeated count, repeated chars, top-key chars."""
    if len(keys) == 0:
        zeros = np.zeros(n_docs)
        return zeros, zeros, zeros
    grouped = pa.table({"doc": parents, "key": keys}).group_by(["doc", "key"]).aggregate([("key", "count")])
    doc = grouped["doc"].to_numpy()
    count = grouped["key_count"].to_numpy().astype(np.float64)
    length = pc.utf8_length(grouped["key"]).to_numpy(zero_copy_only=False).astype(np.float64)
    repeated = _per_doc(doc, count - 1, n_docs)
    repeated_chars = _per_doc(doc, (count - 1) * length, n_docs)
    # Characters covered by the most frequent key of each document (only keys seen twice or more).
    top_chars = np.zeros(n_docs)
    covered = np.where(count > 1, count * length, 0.0)
    np.maximum.at(top_chars, doc, covered)
    return repeated, repeated_chars, top_chars


def heuristic_signals(text: pa.ChunkedArray | pa.Array, toxic_words: list[str]) -> pa.Table:
    """One row of signals (the HEURISTIC_SIGNALS schema, plus `n_words`) per input text."""
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    n = len(text)

    words = pc.utf8_split_whitespace(text)
    n_words = pc.list_value_length(words).fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    flat = pc.list_flatten(words)
    word_doc = pc.list_parent_indices(words).to_numpy()
    word_len = pc.utf8_length(flat).to_numpy(zero_copy_only=False).astype(np.float64)
    bare = pc.replace_substring_regex(pc.utf8_lower(flat), r"^[^\w]+|[^\w]+$", "")

    symbols = (
        pc.count_substring(text, "#").to_numpy(zero_copy_only=False)
        + pc.count_substring(text, "...").to_numpy(zero_copy_only=False)
        + pc.count_substring(text, "…").to_numpy(zero_copy_only=False)
    ).astype(np.float64)
    alpha = pc.match_substring_regex(flat, r"[^\W\d_]").to_numpy(zero_copy_only=False).astype(np.float64)
    stops = pc.is_in(bare, pa.array(STOP_WORDS)).to_numpy(zero_copy_only=False).astype(np.float64)
    toxic = pc.is_in(bare, pa.array([w.lower() for w in toxic_words], pa.string())).to_numpy(zero_copy_only=False)

    lines_list = pc.split_pattern(text, "\n")
    lines = pc.utf8_trim_whitespace(pc.list_flatten(lines_list))
    line_doc = pc.list_parent_indices(lines_list).to_numpy()
    nonempty = pc.greater(pc.utf8_length(lines), 0).to_numpy(zero_copy_only=False)
    lines, line_doc = pc.filter(lines, pa.array(nonempty)), line_doc[nonempty]
    n_lines = _per_doc(line_doc, None, n)
    bullet = pc.starts_with(lines, BULLETS[0]).to_numpy(zero_copy_only=False).copy()
    for mark in BULLETS[1:]:
        bullet |= pc.starts_with(lines, mark).to_numpy(zero_copy_only=False)
    ellipsis = pc.ends_with(lines, "...").to_numpy(zero_copy_only=False) | pc.ends_with(lines, "…").to_numpy(zero_copy_only=False)
    line_chars = _per_doc(line_doc, pc.utf8_length(lines).to_numpy(zero_copy_only=False).astype(np.float64), n)
    dup_lines, dup_line_chars, _ = _group_max_repeats(line_doc, lines, n)

    # Word 2-grams inside each document: pair each word with the next one of the same document.
    same_doc = word_doc[:-1] == word_doc[1:] if len(word_doc) > 1 else np.zeros(0, dtype=bool)
    if same_doc.any():
        keep = pa.array(same_doc)
        bigrams = pc.binary_join_element_wise(pc.filter(bare[:-1], keep), pc.filter(bare[1:], keep), " ")
        _, _, top_2gram_chars = _group_max_repeats(word_doc[:-1][same_doc], bigrams, n)
    else:
        top_2gram_chars = np.zeros(n)
    word_chars = _per_doc(word_doc, word_len, n)

    columns = {
        "mean_word_length": _ratio(word_chars, n_words),
        "symbol_word_ratio": _ratio(symbols, n_words),
        "alpha_words_ratio": _ratio(_per_doc(word_doc, alpha, n), n_words),
        "stop_words": _per_doc(word_doc, stops, n),
        "bullet_lines_ratio": _ratio(_per_doc(line_doc, bullet.astype(np.float64), n), n_lines),
        "ellipsis_lines_ratio": _ratio(_per_doc(line_doc, ellipsis.astype(np.float64), n), n_lines),
        "dup_line_ratio": _ratio(dup_lines, n_lines),
        "dup_line_char_ratio": _ratio(dup_line_chars, line_chars),
        # As in datatrove: characters of the top 2-gram's occurrences over the text's characters.
        "top_2gram_char_ratio": _ratio(top_2gram_chars, pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.float64)),
        "toxic_words": _per_doc(word_doc, toxic.astype(np.float64), n),
    }
    table = pa.table({f.name: pa.array(columns[f.name]).cast(f.type) for f in HEURISTIC_SIGNALS}, schema=HEURISTIC_SIGNALS)
    return table.append_column("n_words", pa.array(n_words.astype(np.int32)))


def drop_reasons(signals: pa.Table, cfg: HeuristicsConfig) -> tuple[np.ndarray, np.ndarray]:
    """(reason, detail) per row; reason '' keeps the row. The first failing rule wins."""
    col = {name: signals[name].to_numpy() for name in signals.column_names}
    rules: list[tuple[str, str, np.ndarray]] = [
        ("gopher_quality", "too few words", col["n_words"] < cfg.min_words),
        ("gopher_quality", "too many words", col["n_words"] > cfg.max_words),
        (
            "gopher_quality",
            "mean word length",
            (col["mean_word_length"] < cfg.min_mean_word_length) | (col["mean_word_length"] > cfg.max_mean_word_length),
        ),
        ("gopher_quality", "symbol/word ratio", col["symbol_word_ratio"] > cfg.max_symbol_word_ratio),
        ("gopher_quality", "bullet lines", col["bullet_lines_ratio"] > cfg.max_bullet_lines_ratio),
        ("gopher_quality", "ellipsis lines", col["ellipsis_lines_ratio"] > cfg.max_ellipsis_lines_ratio),
        ("gopher_quality", "alphabetic words", col["alpha_words_ratio"] < cfg.min_alpha_words_ratio),
        ("gopher_quality", "stop words", col["stop_words"] < cfg.min_stop_words),
        ("gopher_repetition", "duplicate lines", col["dup_line_ratio"] > cfg.max_dup_line_ratio),
        ("gopher_repetition", "duplicate line chars", col["dup_line_char_ratio"] > cfg.max_dup_line_char_ratio),
        ("gopher_repetition", "top 2-gram", col["top_2gram_char_ratio"] > cfg.max_top_2gram_char_ratio),
        ("toxicity", "lexicon hits", col["toxic_words"] > cfg.max_toxic_words),
    ]
    reason = np.full(signals.num_rows, "", dtype=object)
    detail = np.full(signals.num_rows, "", dtype=object)
    # Apply in reverse so the first rule that fails is the one left in place.
    for name, what, failed in reversed(rules):
        reason[failed] = name
        detail[failed] = what
    return reason, detail
