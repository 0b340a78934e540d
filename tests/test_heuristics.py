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


# --- Gopher repetition: paragraphs and n-grams --------------------------------------------------


def test_paragraph_repetition_by_hand():
    s = _signals("A b c.\n\nX y z.\n\nA b c.")
    # paragraphs (split on blank lines): 'A b c.', 'X y z.', 'A b c.' -> 1 of 3 repeats, 6 chars of 22
    assert s["dup_para_ratio"][0] == pytest.approx(1 / 3)
    assert s["dup_para_char_ratio"][0] == pytest.approx(6 / 22)


def test_top_ngrams_by_hand():
    s = _signals("buy cheap pills buy cheap pills now")  # 35 characters
    # 2-grams: 'cheap pills' twice covers 2 * 11 = 22 chars ('buy cheap' twice only 18)
    assert s["top_2gram_char_ratio"][0] == pytest.approx(22 / 35)
    # 3-grams: 'buy cheap pills' twice = 2 * 15 chars; every 4-gram is unique
    assert s["top_3gram_char_ratio"][0] == pytest.approx(30 / 35)
    assert s["top_4gram_char_ratio"][0] == 0


def test_duplicate_ngrams_by_hand():
    text = "alpha beta gamma delta epsilon zeta alpha beta gamma delta epsilon eta"  # 70 characters
    s = _signals(text, "a b c d e a b c d e a b c d e")
    # The 5-gram 'alpha beta gamma delta epsilon' repeats once: its words hold 26 characters.
    assert s["dup_5gram_char_ratio"][0] == pytest.approx(26 / 70)
    assert s["dup_6gram_char_ratio"][0] == 0  # '... zeta' vs '... eta': no 6-gram repeats
    # Three copies of a 5-word run: the 2nd and 3rd copies (10 one-letter words) are covered, of 29 chars.
    assert s["dup_5gram_char_ratio"][1] == pytest.approx(10 / 29)
    # The 10-gram at word 5 repeats the one at word 0 (they overlap): it covers words 5..14 again.
    assert s["dup_10gram_char_ratio"][1] == pytest.approx(10 / 29)
    assert s["dup_6gram_char_ratio"][1] == pytest.approx(10 / 29)


def test_ngrams_never_span_two_documents():
    # 'one two three four five' ends doc 1 and starts doc 2: it must not count as a repeat of either.
    s = _signals("zero one two three four five", "one two three four five six")
    assert s["dup_5gram_char_ratio"] == [0, 0]
    assert s["top_2gram_char_ratio"] == [0, 0]


# --- C4 ----------------------------------------------------------------------------------------


def test_c4_line_filter_by_hand():
    s = _signals(
        "This is one. This is two.\nThis is three! And four?\nShort line\nThe fifth sentence is here.",
        "Too short.\nAnd then it ended...\nThe sky is blue.[1]\n"
        "Enable javascript to see this page.\nThis site uses cookies to work.",
        "Lorem ipsum dolor sit amet, consectetur.\nPlenty of other words are here.",
        "lorem ipsum without punctuation\nA line with {braces} in it.",
        "Enable javascript for {this} to work.\nA normal line of text here.",
    )
    # doc 0: 2 + 2 + 1 sentences in 3 kept lines of 4 ('Short line' has no terminal punctuation)
    assert s["c4_sentences"][0] == 5
    assert s["c4_kept_lines_ratio"][0] == pytest.approx(3 / 4)
    # doc 1: 'Too short.' has 2 words, '...' is not terminal, the citation is removed before the
    # punctuation check, javascript and cookie lines are removed: 1 kept line of 5.
    assert s["c4_sentences"][1] == 1
    assert s["c4_javascript_lines"][1] == 1 and s["c4_policy_lines"][1] == 1
    assert s["c4_kept_lines_ratio"][1] == pytest.approx(1 / 5)
    # 'lorem ipsum' in a candidate line condemns the page; without terminal punctuation it is just removed.
    assert s["c4_lorem_ipsum"] == [False, False, True, False, False]
    # '{' condemns the page, unless its line was already removed for javascript.
    assert s["c4_curly_bracket"] == [False, False, False, True, False]


def test_c4_long_word_lines_are_removed():
    long_line = "A " + "x" * 1001 + " word that ends here."
    s = _signals(long_line + "\nThe other line is fine.")
    assert s["c4_kept_lines_ratio"][0] == pytest.approx(1 / 2)


# --- FineWeb -----------------------------------------------------------------------------------


def test_fineweb_signals_by_hand():
    s = _signals(
        "First line ends here.\nsecond line no stop\nthird one also none\nfourth",
        "Short\nThis line is definitely longer than thirty chars.\nTiny",
        "Same line here\nOther line\nSame line here",
        "a b\nc d\ne f",
        "中文句子。\nEnglish without stop",
    )
    assert s["fineweb_line_punct_ratio"][0] == pytest.approx(1 / 4)
    assert s["fineweb_short_line_ratio"][1] == pytest.approx(2 / 3)  # lines of at most 30 characters
    assert s["fineweb_dup_line_char_ratio"][2] == pytest.approx(14 / 38)  # newlines not counted
    assert s["fineweb_list_ratio"][3] == pytest.approx(2 / 6)  # newlines per word
    assert s["fineweb_line_punct_ratio"][4] == pytest.approx(1 / 2)  # '。' is a sentence terminal


# --- lexicon per language ----------------------------------------------------------------------


def test_toxic_lexicon_per_language():
    texts = pa.array(["What a mist, darn it.", "So ein Mist!", "Darn, so ein MIST.", "Kein Wort."])
    language = pa.array(["en", "de", "de", "de"])
    s = heuristic_signals(texts, ["darn"], language=language, lexicons={"de": ["mist"]}).to_pydict()
    # English uses the default list; German documents use their own list instead of it.
    assert s["toxic_words"] == [1, 1, 1, 0]


# --- rules: every published default at its boundary --------------------------------------------

# (column, value just past the default, reason, detail); the value at the default itself passes.
BOUNDARIES = [
    ("dup_para_ratio", 0.3, "gopher_repetition", "duplicate paragraphs"),
    ("dup_para_char_ratio", 0.2, "gopher_repetition", "duplicate paragraph chars"),
    ("top_3gram_char_ratio", 0.18, "gopher_repetition", "top 3-gram"),
    ("top_4gram_char_ratio", 0.16, "gopher_repetition", "top 4-gram"),
    ("dup_5gram_char_ratio", 0.15, "gopher_repetition", "duplicate 5-grams"),
    ("dup_6gram_char_ratio", 0.14, "gopher_repetition", "duplicate 6-grams"),
    ("dup_7gram_char_ratio", 0.13, "gopher_repetition", "duplicate 7-grams"),
    ("dup_8gram_char_ratio", 0.12, "gopher_repetition", "duplicate 8-grams"),
    ("dup_9gram_char_ratio", 0.11, "gopher_repetition", "duplicate 9-grams"),
    ("dup_10gram_char_ratio", 0.10, "gopher_repetition", "duplicate 10-grams"),
    ("fineweb_short_line_ratio", 0.67, "fineweb_quality", "short lines"),
    ("fineweb_dup_line_char_ratio", 0.01, "fineweb_quality", "duplicate line chars"),
    ("fineweb_list_ratio", 0.3, "fineweb_quality", "list ratio"),
]


def _article_signals() -> pa.Table:
    return heuristic_signals(pa.array([ARTICLE]), [])


def _with(signals: pa.Table, column: str, value: object) -> pa.Table:
    index = signals.schema.get_field_index(column)
    return signals.set_column(index, signals.schema.field(index), pa.array([value], signals.schema.field(index).type))


@pytest.mark.parametrize(("column", "limit", "reason", "detail"), BOUNDARIES)
def test_published_maximum_is_the_boundary(column, limit, reason, detail):
    cfg = HeuristicsConfig(min_words=20)
    base = _article_signals()
    assert list(drop_reasons(base, cfg)[0]) == [""]
    assert list(drop_reasons(_with(base, column, limit), cfg)[0]) == [""]
    reasons, details = drop_reasons(_with(base, column, limit + 0.001), cfg)
    assert (reasons[0], details[0]) == (reason, detail)
    # None switches the rule off.
    setting = f"fineweb_max_{column.removeprefix('fineweb_')}" if column.startswith("fineweb_") else f"max_{column}"
    off = HeuristicsConfig(min_words=20, **{setting: None})
    assert list(drop_reasons(_with(base, column, limit + 0.001), off)[0]) == [""]


def test_c4_and_fineweb_minimums_and_flags():
    cfg = HeuristicsConfig(min_words=20)
    base = _article_signals()
    cases = [
        ("c4_sentences", 4, "c4_quality", "too few sentences"),
        ("c4_lorem_ipsum", True, "c4_quality", "lorem ipsum"),
        ("c4_curly_bracket", True, "c4_quality", "curly bracket"),
        ("fineweb_line_punct_ratio", 0.119, "fineweb_quality", "line punctuation"),
    ]
    for column, value, reason, detail in cases:
        reasons, details = drop_reasons(_with(base, column, value), cfg)
        assert (reasons[0], details[0]) == (reason, detail), column
    assert list(drop_reasons(_with(base, "c4_sentences", 5), cfg)[0]) == [""]
    assert list(drop_reasons(_with(base, "fineweb_line_punct_ratio", 0.12), cfg)[0]) == [""]
    relaxed = HeuristicsConfig(min_words=20, c4_min_sentences=None, c4_drop_lorem_ipsum=False, c4_drop_curly_bracket=False)
    for column, value, _, _ in cases[:3]:
        assert list(drop_reasons(_with(base, column, value), relaxed)[0]) == [""], column


def test_generated_articles_pass_and_generated_spam_fails():
    from curation.scoring.fasttext_classifier import demo_texts

    articles, junk = demo_texts("quality", 60, seed=5)
    cfg = HeuristicsConfig()
    reasons, _ = drop_reasons(heuristic_signals(pa.array(articles), cfg.toxic_words), cfg)
    assert list(reasons) == [""] * len(articles)  # clean prose survives every published rule
    reasons, details = drop_reasons(heuristic_signals(pa.array(junk), cfg.toxic_words), cfg)
    # Keyword stuffing, navigation, notices are dropped; word salad (every 4th) has the words of an article.
    stuffed = [i for i in range(len(junk)) if i % 4 != 3]
    assert all(reasons[i] != "" for i in stuffed), [(i, details[i]) for i in stuffed if reasons[i] == ""]
