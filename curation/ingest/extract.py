"""HTML bytes -> (title, main text, language): decoding, resiliparse extraction, language id.

Per-record Python is unavoidable here (HTML parsing has no vector form); everything after this
step works on Arrow columns.
"""

from __future__ import annotations

import xxhash
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree
from resiliparse.parse.lang import detect_fast

# resiliparse's language detector returns an out-of-place rank; above 1200 it is unreliable.
_LANG_RANK_CUTOFF = 1200


class DecodeError(ValueError):
    """The payload cannot be decoded with its declared charset; `reason` is the drop reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def decode_html(payload: bytes, declared_charset: str | None) -> str:
    """Decode strictly with the declared charset; detect it when none is declared.

    A page that claims a charset its bytes break is dropped rather than silently repaired:
    mojibake in a pretraining corpus is worse than a missing page.
    """
    if declared_charset:
        charset = declared_charset.strip().lower()
        try:
            return payload.decode(charset)
        except LookupError:
            pass  # unknown charset name: fall through to detection
        except UnicodeDecodeError as exc:
            reason = "invalid_utf8" if charset.replace("-", "").replace("_", "") in {"utf8", "utf8mb4"} else "decode_error"
            raise DecodeError(reason, f"{charset}: {exc.reason} at byte {exc.start}") from exc
    return bytes_to_str(payload, detect_encoding(payload))


def extract(html: str) -> tuple[str | None, str]:
    """(title, main text) of a page, with paragraph breaks kept as newlines."""
    tree = HTMLTree.parse(html)
    title = tree.title.strip() if tree.title else None
    text = extract_plain_text(tree, preserve_formatting=True, main_content=True, alt_texts=False)
    return title or None, text.strip()


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence in [0, 1]); 'unknown' with 0.0 when nothing matches."""
    lang, rank = detect_fast(text, cutoff=_LANG_RANK_CUTOFF)
    if lang == "unknown":
        return lang, 0.0
    return lang, max(0.0, 1.0 - rank / _LANG_RANK_CUTOFF)


def normalized_text_hash(text: str) -> str:
    """xxh128 of the text lower-cased with white space collapsed: the exact-dedup key."""
    return xxhash.xxh128_hexdigest(" ".join(text.lower().split()).encode())


def stable_id(*parts: str) -> str:
    """32 hex chars derived from crawl identity (never from row order)."""
    return xxhash.xxh128_hexdigest("\x1f".join(parts).encode())
