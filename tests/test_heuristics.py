"""Each heuristic against documents whose values were worked out by hand."""

import pyarrow as pa
import pytest

from curation.config import HeuristicsConfig
from curation.scoring.heuristics import drop_reasons, heuristic_signals

ARTICLE = (
    "The river town of Ashford has a long history of trade with the villages of the valley.\n"
    "Farmers bring wool and grain to the market, and that market has been held every week since the old bridge was built.\n"
    "Visitors who have time should walk along the canal to see the locks and the mill with its wheel.\n"
    "Local historians say the town grew because the river was deep enough for barges to reach the square.\n"
    "Today the old warehouses by the water hold a library, two bakeries and a small museum of boats.\n"
)


def _signals(*texts: str) -> dict[str, list]:
    return heuristic_signals(pa.array(texts), ["darn", "heck"]).to_pydict()


def test_word_statistics_by_hand():
    s = _signals("the cat, and the dog... #tag 42")
    # words: the cat, and the dog... #tag 42 -> 7 words, 25 chars
    assert s["n_words"] == [7]
    assert s["mean_word_length"][0] == pytest.approx(25 / 7)
    assert s["symbol_word_ratio"][0] == pytest.approx(2 / 7)  # one '#' and one '...'
    assert s["alpha_words_ratio"][0] == pytest.approx(6 / 7)  # '42' has no letter
    assert s["stop_words"] == [3]  # the, and, the (punctuation stripped)


def test_line_statistics_by_hand():
    s = _signals("• first point\n• second point\nA closing line...\n\n• first point")
    # 4 non-empty lines: 3 bullets, 1 ellipsis; '• first point' repeats once (13 chars of 56)
    assert s["bullet_lines_ratio"][0] == pytest.approx(3 / 4)
    assert s["ellipsis_lines_ratio"][0] == pytest.approx(1 / 4)
    assert s["dup_line_ratio"][0] == pytest.approx(1 / 4)
    assert s["dup_line_char_ratio"][0] == pytest.approx(13 / (13 + 14 + 17 + 13))


def test_top_2gram_and_lexicon_by_hand():
    s = _signals("buy now buy now buy now", "What the heck, darn it. Heck!")
    # 'buy now' occurs 3 times: 3 * 7 chars over 23 chars of text
    assert s["top_2gram_char_ratio"][0] == pytest.approx(21 / 23)
    assert s["toxic_words"] == [0, 3]  # heck, darn, Heck! (case and punctuation ignored)


def test_rules_keep_an_article_and_name_the_first_failing_rule():
    cfg = HeuristicsConfig(min_words=20, toxic_words=["darn"])
    texts = [
        ARTICLE,
        "Too short.",
        ("Buy the best watches online with the lowest price\n" * 40),
        ARTICLE + " darn",
        "\n".join(["• " + line for line in ARTICLE.splitlines()] * 1),
        "lorem ipsum dolor " * 30 + "the and",
    ]
    signals = heuristic_signals(pa.array(texts), cfg.toxic_words)
    reason, detail = drop_reasons(signals, cfg)
    assert list(reason) == ["", "gopher_quality", "gopher_repetition", "toxicity", "gopher_quality", "gopher_repetition"]
    assert list(detail[1:]) == ["too few words", "duplicate lines", "lexicon hits", "bullet lines", "top 2-gram"]


def test_empty_batch_and_null_free_output():
    empty = heuristic_signals(pa.array([], pa.string()), [])
    assert empty.num_rows == 0
    one = heuristic_signals(pa.array(["word"]), [])
    assert all(one[c].null_count == 0 for c in one.column_names)
