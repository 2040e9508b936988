"""Unit tests of what commands print for people: numbers with nouns in their number, whole tokens."""

from __future__ import annotations

import pytest

from ingest import count
from ingest.transform.summary import Summary
from ingest.vault.rotation import Rotated


@pytest.mark.parametrize(
    ("n", "noun", "plural", "text"),
    [
        (0, "row", None, "0 rows"),
        (1, "row", None, "1 row"),
        (2, "row", None, "2 rows"),
        (1, "time", None, "1 time"),
        (3, "delivery", "deliveries", "3 deliveries"),
        (1, "delivery", "deliveries", "1 delivery"),
    ],
)
def test_count_puts_the_noun_in_its_number(n, noun, plural, text):
    assert count(n, noun, plural) == text


def test_summary_says_one_row_and_keeps_tokens_whole():
    token = "ab" * 32
    lines = Summary(1, [("user_id_missing", 1)], 0, 0, [("u1", "ios", token, None, "en", 1, "2026-01-01")]).lines()
    assert lines[0] == "user_logins: 1 row (as loginvault_analyst)"
    assert lines[1] == "rejected_login_events: 1 row"
    assert lines[-1] == f"  u1 | ios | {token} | NULL | en | 1 | 2026-01-01"


def test_rotation_line_in_the_singular():
    assert "1 token re-made" in Rotated("hmac", 1, 2, 1, 0.5).line()
    assert "2 vault rows re-encrypted" in Rotated("encryption", 1, 2, 2, 0.5).line()
