"""Cases where ECMA-262 regular expressions (with the ``u`` flag, as JSON Schema's
``pattern`` and the dashboard's ``new RegExp(pattern, "u")`` run them) and Python's ``re``
disagree: (pattern, value, whether ECMA-262 finds a match). The server's check
(tests/chalicelib/test_kinds.py) and a real browser (tests/e2e/test_pattern_semantics.py)
are both held to this table."""

from __future__ import annotations

ARABIC_INDIC_12 = "\u0661\u0662"

PATTERN_CASES: list[tuple[str, str, bool]] = [
    ("^[a-z]+$", "abc", True),
    ("^[a-z]+$", "abc\n", False),  # re: $ matches before a trailing newline
    ("^$", "\n", False),
    ("^\\d+$", "12", True),
    ("^\\d+$", ARABIC_INDIC_12, False),  # re: \d is any script's digit
    ("^\\w+$", "caf\u00e9", False),  # re: \w is any script's letter
    ("^\\S+$", "\u3000", False),
    ("^\\s$", "\u00a0", True),
    ("^\\s$", "\u0085", False),  # re: NEL is a space
    ("^.$", "\r", False),  # re: . excludes only \n
    ("^.$", "\u2028", False),
    ("^.$", "\U0001f600", True),  # one code point with u, though two UTF-16 units
    ("^[^a]$", "\U0001f600", True),
    ("\\bx", "\u00e9x", True),  # re: no word boundary between two letters
    ("^\\p{L}+$", "\u00e9t\u00e9", True),  # re: no \p{...}
    ("^(?<n>a)\\k<n>$", "aa", True),  # re: (?P<n>...) and (?P=n)
    ("^\\cJ$", "\n", True),  # re: no \c
    ("^\\u0041$", "A", True),
    ("^a{2}$", "aa", True),
    ("[\\w-]+", "-", True),
]

# Python's re syntax that is no ECMA-262 regular expression.
NOT_ECMA = ["(?i)a", "a\\Z", "(?P<n>a)", "\\A", "("]
