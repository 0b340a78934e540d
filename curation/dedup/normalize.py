"""Normalization for dedup: the words MinHash shingles are made of, and the URL dedup key.

Words (columnar, in `minhash.word_hashes`): text is split on Unicode white space; each distinct
token of a batch is then normalized once, not each occurrence: NFKC, lower case, every run of
digits -> "0" (so dates and counters do not hide a copy), punctuation and symbols removed
(`"Hello,"` -> `hello`, `state-of-the-art` -> `stateoftheart`). Tokens left empty (a lone `-` or
`|`) are not words. Changing any of this changes every signature: bump `WORDS_VERSION`, which is
part of the cross-build index key, so old and new signatures are never compared.

URLs (`normalize_url`): scheme and host lower case, default port, fragment, `www.` prefix and
tracking parameters (utm_*, fbclid, gclid, ...) removed, the remaining query parameters sorted,
an empty path made `/` and a trailing `/` dropped. Two pages whose URLs normalize the same are
one page fetched twice.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc

WORDS_VERSION = 1

# Query parameters that identify a campaign or a click, never the content.
TRACKING_PARAMS = frozenset(
    {"fbclid", "gclid", "dclid", "msclkid", "yclid", "mc_cid", "mc_eid", "igshid", "_ga", "_hsenc", "_hsmi", "ref_src"}
)
_TRACKING_PREFIXES = ("utm_",)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SESSION_PATH = re.compile(r";(jsessionid|phpsessid|sid)=[^/?#]*", re.IGNORECASE)


def normalize_words(tokens: pa.Array) -> pa.Array:
    """The normalized form of each token (see the module doc); "" for tokens that are not words."""
    words = pc.utf8_lower(pc.utf8_normalize(tokens, "NFKC"))
    # Most tokens are letters only: run the regular expressions on the others alone.
    odd = pc.invert(pc.utf8_is_alpha(words))
    if not pc.any(odd).as_py():
        return words
    fixed = pc.replace_substring_regex(pc.filter(words, odd), r"\p{N}+", "0")
    fixed = pc.replace_substring_regex(fixed, r"[^\p{L}\p{N}]+", "")
    return pc.replace_with_mask(words, odd, fixed)


def normalize_url(url: str | None) -> str | None:
    """The URL dedup key of `url`; None for a missing URL (never a duplicate of anything)."""
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url  # unparsable: compare it as it is
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    host = host.removeprefix("www.")
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = _SESSION_PATH.sub("", parts.path) or "/"
    if len(path) > 1:
        path = path.rstrip("/")
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in TRACKING_PARAMS and not k.lower().startswith(_TRACKING_PREFIXES)
    ]
    # http and https serve the same page on nearly every site: one key for both.
    scheme = "https" if scheme in ("http", "https") else scheme
    return urlunsplit((scheme, netloc, path, urlencode(sorted(query)), ""))


def normalize_urls(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`normalize_url` over a column (per-row Python: URL parsing has no vector form)."""
    return pa.array([normalize_url(u) for u in urls.to_pylist()], pa.string())
