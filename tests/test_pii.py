"""PII detection and masking against texts whose PII was marked by hand."""

import pyarrow as pa

from curation.scoring.pii import MASKS, detect_pii

E, P, IP = MASKS["email"], MASKS["phone"], MASKS["ip"]

CASES = [
    # (text, masked text, emails, phones, ips)
    (
        "Write to anna.miller@daily-news.example.com or call (555) 123-4567 today.",
        f"Write to {E} or call {P} today.",
        1,
        1,
        0,
    ),
    (
        "Servers 192.168.0.12 and 10.0.0.1,8.8.8.8 answered; version 1.2.3.4.5 did not.",
        f"Servers {IP} and {IP},{IP} answered; version 1.2.3.4.5 did not.",
        0,
        0,
        3,
    ),
    (
        "Call 555-123-4567 555.123.4568 or +44 20 7946 0958.",
        f"Call {P} {P} or {P}.",
        0,
        3,
        0,
    ),
    (
        "Mail:a@b.co. Next 1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4",
        f"Mail:{E}. Next {IP} {IP} {IP} {IP}",
        1,
        0,
        4,
    ),
    # Not PII: an ISBN, short numbers, a host without a dot, a year range, an IP-like 5-part version.
    ("ISBN 9780306406157, order 12345, user@localhost, 1999-2004, v2.10.3.4.1.", None, 0, 0, 0),
]


def test_detect_and_mask_by_hand():
    table = detect_pii(pa.array([c[0] for c in CASES]))
    for row, (text, masked, emails, phones, ips) in zip(table.to_pylist(), CASES, strict=True):
        assert row["text"] == (masked if masked is not None else text)
        assert (row["pii_emails"], row["pii_phones"], row["pii_ips"]) == (emails, phones, ips), text
        assert row["pii_count"] == emails + phones + ips


def test_counting_without_masking_keeps_text():
    texts = pa.array(["Reach me at bob@example.org.", None, ""])
    table = detect_pii(texts, mask=False)
    assert table["text"].to_pylist() == ["Reach me at bob@example.org.", None, ""]
    assert table["pii_emails"].to_pylist() == [1, 0, 0]


def test_existing_mask_tokens_are_not_counted_again():
    table = detect_pii(pa.array([f"Already masked {E} and new: x@y.com"]))
    assert table["pii_emails"].to_pylist() == [1]
    assert table["text"].to_pylist() == [f"Already masked {E} and new: {E}"]
