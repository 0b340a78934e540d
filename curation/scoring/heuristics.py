"""Gopher quality / repetition, C4 and FineWeb signals and rules, computed on Arrow columns.

Every signal is computed for a whole batch at once with pyarrow compute kernels and numpy, never
with a Python loop per document: words, lines and paragraphs are flattened into one array with
their parent document index, strings are turned into integers by `dictionary_encode`, and
repetition is found by integer keys (document, item) in one hash pass.

Thresholds are the published defaults as datatrove 0.10 ships them (GopherQualityFilter,
GopherRepetitionFilter, C4QualityFilter, FineWebQualityFilter); see `HeuristicsConfig`.
Deliberate differences from datatrove, all for a columnar form:
- words are whitespace-separated (datatrove uses spaCy tokens, which split off punctuation);
  repetition compares them lower-cased with leading/trailing punctuation stripped;
- Gopher's line statistics use the non-empty, trimmed lines; stop words are counted per occurrence;
- top n-gram: the most characters covered by one repeated n-gram (datatrove: the most frequent one);
- duplicate n-grams: characters of the words covered by repeated occurrences (Gopher's definition;
  datatrove's greedy scan skips ahead n words after each repeat and counts a little less);
- C4 sentences: terminal punctuation followed by a space or the line's end, at least one per kept
  line (datatrove uses spaCy's sentencizer); lines are split on '\\n' only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.config import HeuristicsConfig
from curation.schema import HEURISTIC_SIGNALS

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
BULLETS = ("•", "●", "○", "▪", "◦", "-", "*", "·", "–")
TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)

# Unicode Sentence_Terminal code points (what datatrove's FineWeb filter calls TERMINAL_PUNCTUATION).
_STERM_RANGES = (
    (0x21, 0x21), (0x2E, 0x2E), (0x3F, 0x3F), (0x589, 0x589), (0x61D, 0x61F), (0x6D4, 0x6D4), (0x700, 0x702),
    (0x7F9, 0x7F9), (0x837, 0x837), (0x839, 0x839), (0x83D, 0x83E), (0x964, 0x965), (0x104A, 0x104B),
    (0x1362, 0x1362), (0x1367, 0x1368), (0x166E, 0x166E), (0x1735, 0x1736), (0x17D4, 0x17D5), (0x1803, 0x1803),
    (0x1809, 0x1809), (0x1944, 0x1945), (0x1AA8, 0x1AAB), (0x1B4E, 0x1B4F), (0x1B5A, 0x1B5B), (0x1B5E, 0x1B5F),
    (0x1B7D, 0x1B7F), (0x1C3B, 0x1C3C), (0x1C7E, 0x1C7F), (0x2024, 0x2024), (0x203C, 0x203D), (0x2047, 0x2049),
    (0x2CF9, 0x2CFB), (0x2E2E, 0x2E2E), (0x2E3C, 0x2E3C), (0x2E53, 0x2E54), (0x2E60, 0x2E61), (0x3002, 0x3002),
    (0xA4FF, 0xA4FF), (0xA60E, 0xA60F), (0xA6F3, 0xA6F3), (0xA6F7, 0xA6F7), (0xA876, 0xA877), (0xA8CE, 0xA8CF),
    (0xA92F, 0xA92F), (0xA9C8, 0xA9C9), (0xAA5D, 0xAA5F), (0xAAF0, 0xAAF1), (0xABEB, 0xABEB), (0xFE12, 0xFE12),
    (0xFE15, 0xFE16), (0xFE52, 0xFE52), (0xFE56, 0xFE57), (0xFF01, 0xFF01), (0xFF0E, 0xFF0E), (0xFF1F, 0xFF1F),
    (0xFF61, 0xFF61), (0x10A56, 0x10A57), (0x10F55, 0x10F59), (0x10F86, 0x10F89), (0x11047, 0x11048),
    (0x110BE, 0x110C1), (0x11141, 0x11143), (0x111C5, 0x111C6), (0x111CD, 0x111CD), (0x111DE, 0x111DF),
    (0x11238, 0x11239), (0x1123B, 0x1123C), (0x112A9, 0x112A9), (0x113D4, 0x113D5), (0x1144B, 0x1144C),
    (0x115C2, 0x115C3), (0x115C9, 0x115D7), (0x11641, 0x11642), (0x1173C, 0x1173E), (0x11944, 0x11944),
    (0x11946, 0x11946), (0x11A42, 0x11A43), (0x11A9B, 0x11A9C), (0x11C41, 0x11C42), (0x11EF7, 0x11EF8),
    (0x11F43, 0x11F44), (0x16A6E, 0x16A6F), (0x16AF5, 0x16AF5), (0x16B37, 0x16B38), (0x16B44, 0x16B44),
    (0x16D6E, 0x16D6F), (0x16E98, 0x16E98), (0x1BC9F, 0x1BC9F), (0x1DA88, 0x1DA88),
)  # fmt: skip
_TERMINAL_LINE = "[" + "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in _STERM_RANGES) + "]$"

# C4 (datatrove C4QualityFilter / tfds c4_utils): what a kept line ends with, and what it must not hold.
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_C4_CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
_C4_SENTENCE_END = r"[.!?]+[\"'”’)\]]*(\s|$)"
C4_MAX_WORD_LENGTH = 1000
C4_MIN_WORDS_PER_LINE = 3
FINEWEB_SHORT_LINE_LENGTH = 30

_U64 = np.uint64
_MIX1, _MIX2, _MIX3 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB), _U64(0x9E3779B97F4A7C15)


def _np(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def _per_doc(parents: np.ndarray, values: np.ndarray | None, n_docs: int) -> np.ndarray:
    """Sum `values` (or count rows) per document, given each row's parent document index."""
    return np.bincount(parents, weights=values, minlength=n_docs)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num), dtype=np.float64), where=den > 0)


def _per_doc_max(parents: np.ndarray, values: np.ndarray, n_docs: int) -> np.ndarray:
    """Max of `values` per document; `parents` must be sorted (rows of a document are contiguous)."""
    out = np.zeros(n_docs)
    if len(values):
        docs, starts = np.unique(parents, return_index=True)
        out[docs] = np.maximum.reduceat(values, starts)
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a well-spread 64-bit hash of each integer."""
    x = x ^ (x >> _U64(30))
    x = x * _MIX1
    x = x ^ (x >> _U64(27))
    x = x * _MIX2
    return x ^ (x >> _U64(31))


def _ids(strings: pa.Array) -> np.ndarray:
    """Dense integer id per string (equal strings, equal ids), by one hash pass."""
    return _np(pc.dictionary_encode(strings).indices).astype(np.uint64)


def _occurrences(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: how often its key occurs, and whether this row is not the key's first occurrence.

    `dictionary_encode` numbers distinct values in order of first appearance, so a row repeats an
    earlier one exactly when its group number is not above every group number before it.
    """
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    group = _np(pc.dictionary_encode(pa.array(keys)).indices).astype(np.int64)
    counts = np.bincount(group)[group]
    repeat = np.zeros(len(group), bool)
    repeat[1:] = group[1:] <= np.maximum.accumulate(group)[:-1]
    return counts, repeat


def _split(text: pa.Array, pattern: str, regex: bool = False) -> tuple[pa.Array, np.ndarray]:
    parts = pc.split_pattern_regex(text, pattern) if regex else pc.split_pattern(text, pattern)
    return pc.list_flatten(parts), _np(pc.list_parent_indices(parts))


def _repetition(parents: np.ndarray, items: pa.Array, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per document: items repeating an earlier item, and the characters of those repeats."""
    _, repeat = _occurrences((parents.astype(np.uint64) << _U64(32)) | _ids(items))  # exact (document, item) key
    lengths = _np(pc.utf8_length(items)).astype(np.float64)
    return _per_doc(parents[repeat], None, n_docs), _per_doc(parents[repeat], lengths[repeat], n_docs)


def _ngram_signals(word_doc: np.ndarray, bare: pa.Array, n_docs: int, text_chars: np.ndarray) -> dict[str, np.ndarray]:
    """Gopher's top n-gram (2..4) and duplicate n-gram (5..10) character fractions.

    n-grams are hashed from the word ids incrementally (hash of n words = mix(hash of n-1, next id)),
    so each size costs a few vector operations and one hash pass, not a string join. An n-gram can
    only repeat where its first n-1 words repeat, so each size looks only at the positions whose
    (n-1)-gram occurred more than once: after the 2-grams, few positions are left.
    """
    out = {f"top_{n}gram_char_ratio": np.zeros(n_docs) for n in TOP_NGRAMS}
    out |= {f"dup_{n}gram_char_ratio": np.zeros(n_docs) for n in DUP_NGRAMS}
    n_words = len(word_doc)
    if n_words < 2:
        return out
    ids = _ids(bare) + _U64(1)
    length = _np(pc.utf8_length(bare)).astype(np.float64)
    cum_len = np.concatenate([[0.0], np.cumsum(length)])
    pos = np.arange(n_words)  # start positions still able to hold a repeated n-gram
    key = _mix(ids)
    for n in range(2, max(DUP_NGRAMS) + 1):
        last = pos + n - 1
        inside = last < n_words
        inside[inside] = word_doc[pos[inside]] == word_doc[last[inside]]  # the n words are in one document
        pos, key = pos[inside], key[inside]
        if len(pos) == 0:
            break
        key = _mix(key * _MIX3 + ids[pos + n - 1])
        doc = word_doc[pos]
        occurrences, repeat = _occurrences(_mix(key + doc.astype(np.uint64) * _MIX3))
        if n in TOP_NGRAMS:
            chars = cum_len[pos + n] - cum_len[pos] + (n - 1)  # the n words joined by spaces
            covered = np.where(occurrences > 1, occurrences * chars, 0.0)
            out[f"top_{n}gram_char_ratio"] = _ratio(_per_doc_max(doc, covered, n_docs), text_chars)
        if n in DUP_NGRAMS:
            first = pos[repeat]  # every word of a repeated occurrence is covered, each counted once
            depth = np.cumsum(np.bincount(first, minlength=n_words + 1) - np.bincount(first + n, minlength=n_words + 1))
            covered_words = depth[:n_words] > 0
            out[f"dup_{n}gram_char_ratio"] = _ratio(_per_doc(word_doc[covered_words], length[covered_words], n_docs), text_chars)
        again = occurrences > 1
        pos, key = pos[again], key[again]
    return out


def _toxic_hits(
    bare: pa.Array, word_doc: np.ndarray, n_docs: int, toxic_words: list[str], language: pa.Array | None, lexicons: dict
) -> np.ndarray:
    """Lexicon hits per document; a document whose language has its own lexicon uses that one."""
    default = pc.is_in(bare, pa.array([w.lower() for w in toxic_words], pa.string()))
    hits = _np(default).astype(bool)
    if language is not None and lexicons:
        doc_lang = _np(language.fill_null("")).astype(object)
        word_lang = doc_lang[word_doc]
        for lang, words in lexicons.items():
            in_lang = word_lang == lang
            if in_lang.any():
                own = _np(pc.is_in(bare, pa.array([w.lower() for w in words], pa.string()))).astype(bool)
                hits = np.where(in_lang, own, hits)
    return _per_doc(word_doc, hits.astype(np.float64), n_docs)


def _c4_lines(lines: pa.Array, line_doc: np.ndarray, n_docs: int) -> dict[str, np.ndarray]:
    """C4's line filter (datatrove C4QualityFilter order) on stripped, non-empty lines.

    A line is a candidate if no word exceeds 1000 characters, it ends in terminal punctuation but
    not '...' (after removing wiki citations), and has >= 3 words. Among candidates, 'lorem ipsum'
    or (outside javascript lines) '{' condemn the whole document; javascript and policy lines are
    removed; the rest are kept and their sentences counted.
    """
    line_words = _np(pc.list_value_length(pc.utf8_split_whitespace(lines)))
    long_word = _np(pc.greater(pc.utf8_length(lines), C4_MAX_WORD_LENGTH))
    if long_word.any():  # the regex is costly (1000 states): run it only on lines long enough to match
        where = np.flatnonzero(long_word)
        long_word[where] = _np(pc.match_substring_regex(lines.take(where), rf"\S{{{C4_MAX_WORD_LENGTH}}}\S"))
    cleaned = pc.replace_substring_regex(lines, _C4_CITATION, "")
    terminal = np.zeros(len(lines), bool)
    for mark in C4_END_PUNCTUATION:
        terminal |= _np(pc.ends_with(cleaned, mark))
    terminal &= ~_np(pc.ends_with(cleaned, "..."))
    candidate = ~long_word & terminal & (line_words >= C4_MIN_WORDS_PER_LINE)
    lower = pc.utf8_lower(cleaned)
    lorem = candidate & _np(pc.match_substring(lower, "lorem ipsum"))
    javascript = candidate & ~lorem & _np(pc.match_substring(lower, "javascript"))
    curly = candidate & ~lorem & ~javascript & _np(pc.match_substring(cleaned, "{"))
    policy = np.zeros(len(lines), bool)
    for phrase in C4_POLICY_SUBSTRINGS:
        policy |= _np(pc.match_substring(lower, phrase))
    policy &= candidate & ~lorem & ~javascript & ~curly
    kept = candidate & ~lorem & ~javascript & ~curly & ~policy
    sentences = np.maximum(_np(pc.count_substring_regex(cleaned, _C4_SENTENCE_END)), 1) * kept
    n_lines = _per_doc(line_doc, None, n_docs)
    return {
        "c4_sentences": _per_doc(line_doc, sentences.astype(np.float64), n_docs),
        "c4_lorem_ipsum": _per_doc(line_doc, lorem.astype(np.float64), n_docs) > 0,
        "c4_curly_bracket": _per_doc(line_doc, curly.astype(np.float64), n_docs) > 0,
        "c4_javascript_lines": _per_doc(line_doc, javascript.astype(np.float64), n_docs),
        "c4_policy_lines": _per_doc(line_doc, policy.astype(np.float64), n_docs),
        "c4_kept_lines_ratio": _ratio(_per_doc(line_doc, kept.astype(np.float64), n_docs), n_lines),
    }


def heuristic_signals(
    text: pa.ChunkedArray | pa.Array,
    toxic_words: list[str],
    language: pa.ChunkedArray | pa.Array | None = None,
    lexicons: dict[str, list[str]] | None = None,
) -> pa.Table:
    """One row of signals (the HEURISTIC_SIGNALS schema, plus `n_words`) per input text.

    `toxic_words` is the lexicon for every document, unless `language` (one ISO code per text)
    is given and `lexicons` has a list for that document's language.
    """
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    if isinstance(language, pa.ChunkedArray):
        language = language.combine_chunks()
    n = len(text)
    text_chars = _np(pc.utf8_length(text)).astype(np.float64)

    # Words: whitespace-separated, with `bare` = lower-cased, leading/trailing punctuation stripped.
    words = pc.utf8_split_whitespace(text)
    n_words = _np(pc.list_value_length(words).fill_null(0)).astype(np.float64)
    flat = pc.list_flatten(words)
    word_doc = _np(pc.list_parent_indices(words))
    word_len = _np(pc.utf8_length(flat)).astype(np.float64)
    bare = pc.replace_substring_regex(pc.utf8_lower(flat), r"^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$", "")
    symbols = (
        _np(pc.count_substring(text, "#")) + _np(pc.count_substring(text, "...")) + _np(pc.count_substring(text, "…"))
    ).astype(np.float64)
    alpha = _np(pc.match_substring_regex(flat, r"\p{L}")).astype(np.float64)
    stops = _np(pc.is_in(bare, pa.array(STOP_WORDS))).astype(np.float64)

    # Lines: raw (FineWeb looks at line ends and lengths as they are) and trimmed (Gopher, C4).
    raw_lines, raw_doc = _split(text, "\n")
    trimmed = pc.utf8_trim_whitespace(raw_lines)
    nonempty = _np(pc.greater(pc.utf8_length(trimmed), 0))
    keep = pa.array(nonempty)
    raw_lines, lines, line_doc = pc.filter(raw_lines, keep), pc.filter(trimmed, keep), raw_doc[nonempty]
    n_lines = _per_doc(line_doc, None, n)
    bullet = np.zeros(len(lines), bool)
    for mark in BULLETS:
        bullet |= _np(pc.starts_with(lines, mark))
    ellipsis = _np(pc.ends_with(lines, "...")) | _np(pc.ends_with(lines, "…"))
    line_chars = _per_doc(line_doc, _np(pc.utf8_length(lines)).astype(np.float64), n)
    dup_lines, dup_line_chars = _repetition(line_doc, lines, n)

    paragraphs, para_doc = _split(pc.utf8_trim_whitespace(text), r"\n{2,}", regex=True)
    dup_paras, dup_para_chars = _repetition(para_doc, paragraphs, n)

    _, raw_dup_chars = _repetition(line_doc, raw_lines, n)
    punct_lines = _np(pc.match_substring_regex(raw_lines, _TERMINAL_LINE)).astype(np.float64)
    short_lines = (_np(pc.utf8_length(raw_lines)) <= FINEWEB_SHORT_LINE_LENGTH).astype(np.float64)
    newlines = _np(pc.count_substring(text, "\n")).astype(np.float64)

    columns = {
        "mean_word_length": _ratio(_per_doc(word_doc, word_len, n), n_words),
        "symbol_word_ratio": _ratio(symbols, n_words),
        "alpha_words_ratio": _ratio(_per_doc(word_doc, alpha, n), n_words),
        "stop_words": _per_doc(word_doc, stops, n),
        "bullet_lines_ratio": _ratio(_per_doc(line_doc, bullet.astype(np.float64), n), n_lines),
        "ellipsis_lines_ratio": _ratio(_per_doc(line_doc, ellipsis.astype(np.float64), n), n_lines),
        "dup_line_ratio": _ratio(dup_lines, n_lines),
        "dup_line_char_ratio": _ratio(dup_line_chars, line_chars),
        "toxic_words": _toxic_hits(bare, word_doc, n, toxic_words, language, lexicons or {}),
        "dup_para_ratio": _ratio(dup_paras, _per_doc(para_doc, None, n)),
        "dup_para_char_ratio": _ratio(dup_para_chars, text_chars),
        **_ngram_signals(word_doc, bare, n, text_chars),
        **_c4_lines(lines, line_doc, n),
        "fineweb_line_punct_ratio": _ratio(_per_doc(line_doc, punct_lines, n), n_lines),
        "fineweb_short_line_ratio": _ratio(_per_doc(line_doc, short_lines, n), n_lines),
        "fineweb_dup_line_char_ratio": _ratio(raw_dup_chars, text_chars - newlines),
        "fineweb_list_ratio": _ratio(newlines, n_words),
    }
    table = pa.table({f.name: pa.array(columns[f.name]).cast(f.type) for f in HEURISTIC_SIGNALS}, schema=HEURISTIC_SIGNALS)
    return table.append_column("n_words", pa.array(n_words.astype(np.int32)))


def _above(values: np.ndarray, limit: float | None) -> np.ndarray:
    return values > limit if limit is not None else np.zeros(len(values), bool)


def _below(values: np.ndarray, limit: float | None) -> np.ndarray:
    return values < limit if limit is not None else np.zeros(len(values), bool)


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
        # Rules added after the original set, so the reasons of rows they already caught stay the same.
        ("gopher_repetition", "duplicate paragraphs", _above(col["dup_para_ratio"], cfg.max_dup_para_ratio)),
        ("gopher_repetition", "duplicate paragraph chars", _above(col["dup_para_char_ratio"], cfg.max_dup_para_char_ratio)),
        ("gopher_repetition", "top 3-gram", _above(col["top_3gram_char_ratio"], cfg.max_top_3gram_char_ratio)),
        ("gopher_repetition", "top 4-gram", _above(col["top_4gram_char_ratio"], cfg.max_top_4gram_char_ratio)),
        *[
            (
                "gopher_repetition",
                f"duplicate {n}-grams",
                _above(col[f"dup_{n}gram_char_ratio"], getattr(cfg, f"max_dup_{n}gram_char_ratio")),
            )
            for n in DUP_NGRAMS
        ],
        ("c4_quality", "lorem ipsum", col["c4_lorem_ipsum"] & cfg.c4_drop_lorem_ipsum),
        ("c4_quality", "curly bracket", col["c4_curly_bracket"] & cfg.c4_drop_curly_bracket),
        ("c4_quality", "too few sentences", _below(col["c4_sentences"], cfg.c4_min_sentences)),
        ("fineweb_quality", "line punctuation", _below(col["fineweb_line_punct_ratio"], cfg.fineweb_min_line_punct_ratio)),
        ("fineweb_quality", "short lines", _above(col["fineweb_short_line_ratio"], cfg.fineweb_max_short_line_ratio)),
        (
            "fineweb_quality",
            "duplicate line chars",
            _above(col["fineweb_dup_line_char_ratio"], cfg.fineweb_max_dup_line_char_ratio),
        ),
        ("fineweb_quality", "list ratio", _above(col["fineweb_list_ratio"], cfg.fineweb_max_list_ratio)),
    ]
    reason = np.full(signals.num_rows, "", dtype=object)
    detail = np.full(signals.num_rows, "", dtype=object)
    # Apply in reverse so the first rule that fails is the one left in place.
    for name, what, failed in reversed(rules):
        reason[failed] = name
        detail[failed] = what
    return reason, detail
