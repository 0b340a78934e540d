"""Image-text candidates from a parsed page: every <img> with a usable caption (alt, else title).

Per tag (Python, there is no vector form for DOM walks and URL resolution): resolve `src` (or a
lazy-loading `data-src`) against <base href> and the page URL, keep http(s) only, take the caption,
drop duplicates within the page. Per batch (Arrow): DataComp-style caption rules on the columns,
and caption language. Every tag that does not become a pair is counted with its reason.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urldefrag, urljoin

import pyarrow as pa
import pyarrow.compute as pc
from resiliparse.parse.html import HTMLTree

from curation.config import ImageCandidatesConfig
from curation.ingest.langid import LanguageIdentifier

_LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original")
_INT_PREFIX = re.compile(r"\s*(\d{1,7})(?:\.\d*)?\s*(?:px)?\s*$")
# A caption that is just a file name ("IMG_2041.jpg", "banner-home.png").
_FILENAME_CAPTION = r"(?i)^[\w\s.,()+-]*\.(jpe?g|png|gif|webp|bmp|svg|tiff?|avif)$"
# Columns collected per tag, in this order (see `ImageRows.add`).
TAG_COLUMNS = ("image_url", "caption", "alt", "img_title", "width", "height")


def _dimension(value: str | None) -> int | None:
    """`"200"`, `"200px"` -> 200; percentages and junk -> None."""
    if not value:
        return None
    match = _INT_PREFIX.match(value)
    return int(match.group(1)) if match else None


def _caption(alt: str | None, title: str | None) -> str:
    for text in (alt, title):
        if text:
            collapsed = " ".join(text.split())
            if collapsed:
                return collapsed
    return ""


def page_images(tree: HTMLTree, page_url: str, max_per_page: int, skipped: Counter) -> list[tuple]:
    """(image_url, caption, alt, title, width, height) of the page's <img> tags that have a caption.

    Tags without one are counted in `skipped` by reason: bad_src, no_caption, dup_in_page, too_many.
    """
    if tree.document is None:
        return []
    tags = tree.document.get_elements_by_tag_name("img")
    if not len(tags):
        return []
    base = page_url
    base_tag = tree.document.query_selector("base[href]")
    if base_tag is not None:
        base = urljoin(page_url, base_tag.getattr("href", "").strip())
    out: list[tuple] = []
    seen: set[str] = set()
    for tag in tags:
        src = (tag.getattr("src") or "").strip()
        if not src or src.startswith("data:"):
            src = next((v.strip() for a in _LAZY_SRC_ATTRS if (v := tag.getattr(a))), src)
        alt, title = tag.getattr("alt"), tag.getattr("title")
        caption = _caption(alt, title)
        if not caption:
            skipped["no_caption"] += 1
            continue
        url = urldefrag(urljoin(base, src))[0] if src and not src.startswith(("data:", "javascript:", "blob:")) else ""
        if not url.startswith(("http://", "https://")) or len(url) > 2048:
            skipped["bad_src"] += 1
            continue
        if url in seen:
            skipped["dup_in_page"] += 1
            continue
        if len(out) >= max_per_page:
            skipped["too_many"] += 1
            continue
        seen.add(url)
        out.append((url, caption, alt, title, _dimension(tag.getattr("width")), _dimension(tag.getattr("height"))))
    return out


def caption_rules(pairs: pa.Table, cfg: ImageCandidatesConfig, lid: LanguageIdentifier) -> tuple[pa.Table, Counter]:
    """Apply the caption rules to a batch of candidates; (kept rows, dropped counts by reason).

    Fills `caption_language` / `caption_language_score`. Reasons, first match wins:
    caption_short (fewer words or characters than the minimum), caption_long, caption_filename, caption_lang.
    """
    counts: Counter = Counter()
    if not pairs.num_rows:
        return pairs, counts
    captions = pairs["caption"]
    n_chars = pc.utf8_length(captions)
    n_words = pc.list_value_length(pc.utf8_split_whitespace(captions))
    reasons = [
        ("caption_short", pc.or_(pc.less(n_words, cfg.min_caption_words), pc.less(n_chars, cfg.min_caption_chars))),
        ("caption_long", pc.greater(n_chars, cfg.max_caption_chars)),
        ("caption_filename", pc.match_substring_regex(captions, _FILENAME_CAPTION)),
    ]
    keep = pa.array([True] * pairs.num_rows)
    for reason, bad in reasons:
        hit = pc.and_(keep, bad)
        counts[reason] += pc.sum(hit).as_py() or 0
        keep = pc.and_not(keep, bad)
    pairs = pairs.filter(keep)
    if not pairs.num_rows:
        return pairs, counts
    langs, scores = lid.predict(pairs["caption"].to_pylist())
    pairs = pairs.set_column(pairs.schema.get_field_index("caption_language"), "caption_language", pa.array(langs, pa.string()))
    pairs = pairs.set_column(
        pairs.schema.get_field_index("caption_language_score"), "caption_language_score", pa.array(scores, pa.float32())
    )
    if cfg.caption_languages:
        ok = pc.and_(
            pc.is_in(pairs["caption_language"], pa.array(cfg.caption_languages)),
            pc.greater_equal(pairs["caption_language_score"], cfg.min_caption_language_score),
        )
        counts["caption_lang"] += pairs.num_rows - (pc.sum(ok).as_py() or 0)
        pairs = pairs.filter(ok)
    return pairs, counts
