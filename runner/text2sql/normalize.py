"""The one text normalisation used to compare WikiSQL values with TabFact cells.

TabFact lowercased and re-tokenised every cell (`St. Louis` -> `st louis`, `1995-96` ->
`1995 - 96`), so a literal copied from a question only equals its cell under a key that drops
case, spaces and punctuation. The data README defines it: NFKC, lowercase, keep the
characters for which `str.isalnum()` is true; numbers are formatted first (13.0 -> "13").
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache


def format_number(x: int | float) -> str:
    """13.0 -> '13', 2.5 -> '2.5': integral floats print like ints so 13.0 and '13' agree."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


@lru_cache(maxsize=1 << 18)
def text_key(s: str) -> str:
    """nkey of a str (NFKC, lowercase, alphanumerics only)."""
    # Called from the SQLite collation for every text comparison: cached, and the common
    # already-clean ASCII case skips the NFKC pass.
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    return "".join(ch for ch in s.lower() if ch.isalnum())


def nkey(x: object) -> str:
    """Comparison key of a cell or literal; None -> ''."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, (int, float)):
        return text_key(format_number(x))
    if isinstance(x, bytes):
        x = x.decode("utf-8", "replace")
    return text_key(str(x))
