"""PII detection and masking, Dolma-style: e-mail addresses, phone numbers and IP addresses.

Dolma (Soldaini et al. 2024) finds these three kinds with regular expressions, masks them with
`|||EMAIL_ADDRESS|||`, `|||PHONE_NUMBER|||` and `|||IP_ADDRESS|||`, and removes documents with
more than 5 of them (here: the `pii` select rule on `pii_count`). The patterns follow Dolma's
regex tagger with its post-processing folded in (an e-mail domain needs a dot; numbers must not
start inside a longer number or word), written for RE2 so that pyarrow counts and masks a whole
column at once. Like Dolma's, they look for North-American and `+`-prefixed international phone
numbers and IPv4 addresses; Dolma's context check (no 'isbn' / 'doi' / '#' within 100 characters)
is not applied.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MASKS = {"email": "|||EMAIL_ADDRESS|||", "ip": "|||IP_ADDRESS|||", "phone": "|||PHONE_NUMBER|||"}

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Each pattern: (text kept before the match, the PII, text kept after). Kinds run in this order, so
# the digits of an e-mail or an IP address are never taken for a phone number.
PATTERNS = {
    "email": r"()([A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})()",
    # Not inside a longer dotted number (a version string such as 1.2.3.4.5 stays).
    "ip": r"(^|[^\w.])((?:" + _OCTET + r"\.){3}" + _OCTET + r")($|[^\w.]|\.\s|\.$)",
    "phone": (
        r"(^|[^\w+.])("
        r"\+\d{1,3}[-. ]\(?\d{1,4}\)?(?:[-. ]\d{2,4}){2,4}"  # +44 20 7946 0958
        r"|(?:\+?1[-. ]?)?(?:\(\d{3}\) ?|\d{3}[-. ]?)\d{3}[-. ]?\d{4}"  # (555) 123-4567, 555.123.4567
        r")\b()"
    ),
}
# A match eats the character before (and for IPs after) it, so a neighbour sharing that character
# is found by a second pass over the masked text; two passes find every match of a run.
_PASSES = 3


def _count_and_mask(text: pa.Array, kind: str) -> tuple[pa.Array, np.ndarray]:
    """Mask every match; count them as the masks added (regex counting restarts `^` after a match)."""
    pattern, mask = PATTERNS[kind], MASKS[kind]
    before = pc.count_substring(text, mask).to_numpy(zero_copy_only=False)
    for _ in range(_PASSES):
        if not pc.any(pc.match_substring_regex(text, pattern)).as_py():
            break
        text = pc.replace_substring_regex(text, pattern, r"\1" + mask + r"\3")
    return text, pc.count_substring(text, mask).to_numpy(zero_copy_only=False) - before


def detect_pii(text: pa.Array | pa.ChunkedArray, mask: bool = True) -> pa.Table:
    """Per text: `text` (masked when `mask`, else unchanged), pii_emails, pii_phones, pii_ips, pii_count."""
    original = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    masked = original.fill_null("")
    counts = {}
    for kind in PATTERNS:
        masked, counts[kind] = _count_and_mask(masked, kind)
    total = counts["email"] + counts["phone"] + counts["ip"]
    out = masked if mask else original
    # Keep nulls null: masking never invents text for a missing value.
    out = pc.if_else(pc.is_null(original), pa.scalar(None, pa.string()), out) if original.null_count else out
    return pa.table(
        {
            "text": out,
            "pii_emails": pa.array(counts["email"], pa.int32()),
            "pii_phones": pa.array(counts["phone"], pa.int32()),
            "pii_ips": pa.array(counts["ip"], pa.int32()),
            "pii_count": pa.array(total, pa.int32()),
        }
    )
