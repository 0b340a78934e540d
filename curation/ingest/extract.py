"""HTML bytes -> (title, main text): binary sniffing, charset decoding, resiliparse or trafilatura.

Per-record Python is unavoidable here (HTML parsing has no vector form); everything after this
step works on Arrow columns. Language id lives in `langid.py` and runs on whole batches.
"""

from __future__ import annotations

import xxhash
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree

from curation.ingest.langid import ResiliparseLanguageId

# Leading bytes of formats that servers mislabel as text/html (PDF, images, archives).
_BINARY_SIGNATURES = (
    b"%PDF-",
    b"\x89PNG",
    b"GIF87a",
    b"GIF89a",
    b"\xff\xd8\xff",
    b"PK\x03\x04",
    b"\x1f\x8b\x08",
    b"RIFF",
    b"\x00\x00\x01\x00",
)
_WIDE_CHARSETS = ("utf-16", "utf16", "utf-32", "utf32", "ucs-2", "ucs2")


class DecodeError(ValueError):
    """The payload cannot be decoded with its declared charset; `reason` is the drop reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def binary_content(payload: bytes, declared_charset: str | None) -> str | None:
    """Why `payload` is binary although labelled as HTML, or None when it looks like text."""
    if payload.find(b"\x00", 0, 1024) < 0 and not payload.startswith(_BINARY_SIGNATURES):
        return None  # the common case, decided without copying
    if payload.startswith(_BINARY_SIGNATURES):
        return f"binary signature {payload[:8]!r}"
    if payload.startswith((b"\xff\xfe", b"\xfe\xff")) or (declared_charset or "").lower().startswith(_WIDE_CHARSETS):
        return None  # UTF-16/32 text has NUL bytes by design
    return "NUL bytes in the first KiB"


def decode_html(payload: bytes, declared_charset: str | None) -> str:
    """Decode strictly with the declared charset; else from <meta charset>, else detect it.

    A page that claims a charset its bytes break is dropped rather than silently repaired:
    mojibake in a pretraining corpus is worse than a missing page.
    """
    if declared_charset:
        charset = declared_charset.strip().strip("\"'").lower()
        try:
            return payload.decode(charset)
        except LookupError:
            pass  # unknown charset name: fall through to detection
        except UnicodeDecodeError as exc:
            reason = "invalid_utf8" if charset.replace("-", "").replace("_", "") in {"utf8", "utf8mb4"} else "decode_error"
            raise DecodeError(reason, f"{charset}: {exc.reason} at byte {exc.start}") from exc
    return bytes_to_str(payload, detect_encoding(payload, from_html_meta=True))


def parse_html(html: str) -> HTMLTree:
    return HTMLTree.parse(html)


def title_of(tree: HTMLTree) -> str | None:
    title = tree.title
    return title.strip() or None if title else None


def main_text(tree: HTMLTree, html: str, extractor: str = "resiliparse") -> str:
    """Main text with paragraph breaks as newlines, by resiliparse (fast) or trafilatura (slower, precise)."""
    if extractor == "trafilatura":
        import trafilatura

        text = trafilatura.extract(html, output_format="txt", include_comments=False, include_tables=True, deduplicate=False)
        return (text or "").strip()
    return extract_plain_text(tree, preserve_formatting=True, main_content=True, alt_texts=False).strip()


def extract(html: str) -> tuple[str | None, str]:
    """(title, main text) of a page with resiliparse."""
    tree = parse_html(html)
    return title_of(tree), main_text(tree, html)


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence in [0, 1]) by the bundled detector; 'unknown' with 0.0 when nothing matches."""
    langs, scores = ResiliparseLanguageId().predict([text])
    return langs[0], scores[0]


def text_hash_and_words(text: str) -> tuple[str, int]:
    """(exact-dedup key, word count) from one split: xxh128 of the lower-cased, space-collapsed text."""
    words = text.lower().split()
    return xxhash.xxh128_hexdigest(" ".join(words).encode()), len(words)


def normalized_text_hash(text: str) -> str:
    """xxh128 of the text lower-cased with white space collapsed: the exact-dedup key."""
    return text_hash_and_words(text)[0]


def stable_id(*parts: str) -> str:
    """32 hex chars derived from crawl identity (never from row order)."""
    return xxhash.xxh128_hexdigest("\x1f".join(parts).encode())
