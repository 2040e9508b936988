"""The rule a recovery, erasure or approval reason must meet, in Python: the command refuses a
bad reason before it reaches the database (one `error:` line, exit 2). The database applies the
same rule (loginvault.reason_problem, ingest/schema/repeatable/65_requests.sql) to whatever reaches it and
records a refusal; a test holds the two equal, code point by code point.

A reason is audited and printed by `loginvault audit`: it must say something (not blank once
Unicode white space, format characters and invisible fillers are removed, and at least one
letter or digit of a common script: combining marks, unassigned or private code points alone
print as nothing), be at most MAX_LENGTH characters, and hold no control character that could
forge or hide a line (C0, C1, line and paragraph separators, bidirectional controls).
"""

from __future__ import annotations

MAX_LENGTH = 500

# Code point ranges (inclusive), the same as the SQL function's character classes.
CONTROL = ((0x01, 0x1F), (0x7F, 0x9F), (0x2028, 0x2029), (0x202A, 0x202E), (0x2066, 0x2069))
INVISIBLE = (
    (0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0xAD, 0xAD), (0x34F, 0x34F),
    (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2),
    (0x115F, 0x1160), (0x1680, 0x1680), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x2000, 0x200F),
    (0x2028, 0x202F), (0x205F, 0x2064), (0x2066, 0x206F), (0x2800, 0x2800), (0x3000, 0x3000),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE0020, 0xE007F), (0xE0100, 0xE01EF),
)  # fmt: skip


# Letters and digits of common scripts: Latin, Greek, Cyrillic, Hebrew, Arabic, Devanagari, kana, CJK, Hangul.
LETTERS = (
    (0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x24F), (0x386, 0x3CE),
    (0x400, 0x4FF), (0x5D0, 0x5EA), (0x620, 0x64A), (0x660, 0x669), (0x904, 0x939), (0x3041, 0x30FA),
    (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
)  # fmt: skip


def _within(ranges: tuple[tuple[int, int], ...], char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in ranges)


def problem(reason: str | None) -> str | None:
    """Why `reason` cannot be audited, or None when it can (the same sentences as the SQL's)."""
    if reason is None:
        return "a reason is required"
    if len(reason) > MAX_LENGTH:
        return f"a reason is at most {MAX_LENGTH} characters (this one has {len(reason)})"
    if any(_within(CONTROL, c) for c in reason):
        return "a reason may not contain control characters (tabs, line breaks, bidirectional controls)"
    if all(_within(INVISIBLE, c) for c in reason):
        return "a reason must say why: this one is blank"
    if not any(_within(LETTERS, c) for c in reason):
        return "a reason must say why: it holds no letter or digit"
    return None
