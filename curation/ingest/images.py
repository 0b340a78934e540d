"""Image-text candidates from a page: every <img> with a usable caption (alt, else title).

Per page (Python): find the <img> tags, resolve `src` (or a lazy-loading `data-src`) against
<base href> and the page URL, keep http(s) only, take the caption, drop duplicates within the
page. Per batch (Arrow): DataComp-style caption rules on the columns, and caption language.
Every tag that does not become a pair is counted with its reason.

Tags are found by scanning the decoded HTML rather than through resiliparse's DOM: materialising
DOM nodes as Python objects costs about 70 us per node in resiliparse 2.0 (over 1 ms for a
typical page, more than parsing and text extraction together), while the scan takes tens of
microseconds. It ignores <script>, <style> and comment bodies, decodes entities in attribute
values and accepts unquoted and single-quoted attributes, as the DOM would for <img> tags.
"""

from __future__ import annotations

import html as htmllib
import re
from collections import Counter
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from curation.config import ImageCandidatesConfig
from curation.ingest.langid import LanguageIdentifier

# Openings of the tags we need, matched on the lower-cased page; script/style/comment bodies are
# jumped over (an "<img" inside them is not a tag).
_OPENINGS = re.compile("<(img|base|script|style|!--)")
_CLOSINGS = {"script": "</script", "style": "</style", "!--": "-->"}
_TAG_END = " \t\n\r\f/>"
# A non-empty alt or title attribute in a lower-cased tag: only those tags are worth parsing.
_HAS_CAPTION = re.compile(r"""(?:alt|title)\s*=\s*(?:"\s*[^"\s]|'\s*[^'\s]|[^\s"'>])""")
_ATTR = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?""")
_LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original")
_INT_VALUE = re.compile(r"\s*(\d{1,7})(?:\.\d*)?\s*(?:px)?\s*$")
# A caption that is just a file name ("IMG_2041.jpg", "banner-home.png").
_FILENAME_CAPTION = r"(?i)^[\w\s.,()+-]*\.(jpe?g|png|gif|webp|bmp|svg|tiff?|avif)$"


def _attributes(raw: str) -> dict[str, str]:
    """Attributes of a tag, names lower-cased, first occurrence wins (as in HTML), entities decoded."""
    attrs: dict[str, str] = {}
    for name, double, single, bare in _ATTR.findall(raw):
        name = name.lower()
        if name not in attrs:
            value = double or single or bare
            attrs[name] = htmllib.unescape(value) if "&" in value else value
    return attrs


def _scan_tags(html: str) -> tuple[list[str], str | None]:
    """(raw attribute text of every <img> tag, href of the first <base>), outside script/style/comments.

    One `re` pass for literal openings over a lower-cased copy (about 3x faster than a pattern with
    IGNORECASE or character classes), jumping over raw-text bodies with str.find.
    """
    low = html.lower()
    if "<img" not in low:
        return [], None
    tags: list[str] = []
    base = None
    pos, n = 0, len(low)
    search, find = _OPENINGS.search, low.find
    while (match := search(low, pos)) is not None:
        name, after = match.group(1), match.end()
        closing = _CLOSINGS.get(name)
        if closing is not None:
            end = find(closing, after)
            pos = n if end < 0 else end + len(closing)
            continue
        pos = after
        if low[after : after + 1] not in _TAG_END:  # <imgx>, <basefont>
            continue
        end = find(">", after)
        if end < 0:
            break
        if name == "img":
            tags.append(html[after:end])
        elif base is None:
            base = _attributes(html[after:end]).get("href")
        pos = end + 1
    return tags, base


def _dimension(value: str | None) -> int | None:
    """`"200"`, `"200px"` -> 200; percentages and junk -> None."""
    if not value:
        return None
    if value.isdigit() and len(value) < 8:
        return int(value)
    match = _INT_VALUE.match(value)
    return int(match.group(1)) if match else None


def _caption(alt: str | None, title: str | None) -> str:
    for text in (alt, title):
        if text:
            collapsed = " ".join(text.split())
            if collapsed:
                return collapsed
    return ""


class _Resolver:
    """Absolute image URLs against a page (and its <base>), with a fast path for common forms."""

    def __init__(self, page_url: str, base_href: str | None):
        self.base = urljoin(page_url, base_href.strip()) if base_href else page_url
        parts = urlsplit(self.base)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.scheme = parts.scheme

    def __call__(self, src: str) -> str:
        if src.startswith(("http://", "https://")) and "/." not in src:
            url = src
        elif src.startswith("//"):
            url = f"{self.scheme}:{src}"
        elif src.startswith("/") and "/." not in src:
            url = self.origin + src
        else:
            url = urljoin(self.base, src)
        hash_at = url.find("#")
        return url if hash_at < 0 else url[:hash_at]


def page_images(html: str, page_url: str, max_per_page: int, skipped: Counter) -> list[tuple]:
    """(image_url, caption, alt, title, width, height) of the page's <img> tags that have a caption.

    Tags without one are counted in `skipped` by reason: bad_src, no_caption, dup_in_page, too_many.
    """
    tags, base_href = _scan_tags(html)
    if not tags:
        return []
    resolve = None
    out: list[tuple] = []
    seen: set[str] = set()
    for raw in tags:
        if not _HAS_CAPTION.search(raw.lower()):
            skipped["no_caption"] += 1
            continue
        attrs = _attributes(raw)
        alt, title = attrs.get("alt"), attrs.get("title")
        caption = _caption(alt, title)
        if not caption:
            skipped["no_caption"] += 1
            continue
        src = attrs.get("src", "").strip()
        if not src or src.startswith("data:"):
            src = next((v.strip() for a in _LAZY_SRC_ATTRS if (v := attrs.get(a))), src)
        if resolve is None:
            resolve = _Resolver(page_url, base_href)
        url = resolve(src) if src and not src.startswith(("data:", "javascript:", "blob:")) else ""
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
        out.append((url, caption, alt, title, _dimension(attrs.get("width")), _dimension(attrs.get("height"))))
    return out


def caption_rules(pairs: pa.Table, cfg: ImageCandidatesConfig, lid: LanguageIdentifier) -> tuple[pa.Table, Counter]:
    """Apply the caption rules to a batch of candidates; (kept rows, dropped counts by reason).

    Reasons, first match wins: caption_short (fewer words or characters than the minimum),
    caption_long, caption_filename, caption_lang. `caption_language` / `caption_language_score`
    are filled when `caption_languages` is set (identifying every caption costs ~10% of ingest).
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
        if hits := pc.sum(hit).as_py():
            counts[reason] += hits
        keep = pc.and_not(keep, bad)
    pairs = pairs.filter(keep)
    if not pairs.num_rows or not cfg.caption_languages:
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
        if rejected := pairs.num_rows - (pc.sum(ok).as_py() or 0):
            counts["caption_lang"] += rejected
        pairs = pairs.filter(ok)
    return pairs, counts
