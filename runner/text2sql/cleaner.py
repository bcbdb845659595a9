"""Turn a model's raw answer into one SQL statement, recording what was removed.

Models wrap SQL in reasoning blocks, markdown fences, "SQL:" prefixes and explanations (in
the seeds, fenced SQL failed to execute and only 11.9% of teacher rows were kept until a
cleaner was added). The steps run in order; each records a tag in `removed` when it changed
something:

  think            <think>/<thinking>/<reasoning> blocks (and a dangling </think> prefix)
  fenced           a ``` fence (with or without language) or `inline code` around the SQL
  prefix           "SQL:", "SQL query:", "Query:", "Answer:" right before the statement
  prose            any other text before the statement
  multi_statement  further statements after the first `;` (only the first is kept)
  trailing         explanation after the statement (after `;`, a blank line or a prose line)
  empty            no SQL statement found: the result is ""
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_THINK_OPEN = re.compile(r"<(think|thinking|reasoning|reason)>", re.I)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning|reason)>", re.I)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_INLINE = re.compile(r"^\s*`([^`]+)`\s*$", re.S)
_START = re.compile(r"\b(SELECT|WITH)\b", re.I)
_LINE_START = re.compile(r"(?:^|\n)[ \t]*(?:[A-Za-z ]{0,20}:[ \t]*)?(SELECT|WITH)\b", re.I)
_PREFIX = re.compile(r"(?:^|\n)[ \t]*(?:the\s+)?(?:sql(?:ite)?(?:\s+query)?|query|answer|output|a)\s*:\s*$", re.I)
_PROSE_LINE = re.compile(
    r"^\s*(this|these|that|the|here|explanation|note|it|i|we|in\s+(?:this|the)|above|below|output|result|"
    r"assuming|if|because)\b|^\s*(--|\*\*|#|\d+\.\s)", re.I)
_SQL_KEYWORD = re.compile(r"^\s*(select|with|insert|update|delete|drop|create|alter|attach|pragma|"
                          r"replace|vacuum|detach|begin|commit|explain)\b", re.I)


@dataclass(frozen=True)
class CleanResult:
    sql: str
    removed: tuple[str, ...]


# Text up to the first `;` that is outside quotes ('' and "" escapes are two quoted runs).
_UNTIL_SEMICOLON = re.compile(r"""(?:'[^']*'|"[^"]*"|`[^`]*`|\[[^\]]*\]|[^;'"`\[])*""")


def _split_first_statement(sql: str) -> tuple[str, str]:
    """(text up to the first `;` outside quotes, the rest after it)."""
    if ";" not in sql:
        return sql, ""
    end = _UNTIL_SEMICOLON.match(sql).end()
    if end < len(sql) and sql[end] == ";":
        return sql[:end], sql[end + 1:]
    return sql, ""  # an unclosed quote: leave it for SQLite to report


def _cut_trailing_prose(stmt: str) -> tuple[str, bool]:
    """Keep lines while they look like SQL: stop at a blank line or a prose-looking line."""
    lines = stmt.split("\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if not line.strip() or _PROSE_LINE.match(line):
            break
        kept.append(line)
    cut = len(kept) < len(lines) and any(l.strip() for l in lines[len(kept):])
    return "\n".join(kept), cut


def _strip_think(s: str) -> str:
    """Drop reasoning blocks; a close tag with no opening drops everything before it (the chat
    template opened the block), an opening with no close drops the rest (cut at max tokens).
    A scan with str.find, linear in the text: a regex with .*? is quadratic on '<think>' * n."""
    first_open, first_close = _THINK_OPEN.search(s), _THINK_CLOSE.search(s)
    if first_close and (not first_open or first_close.start() < first_open.start()):
        s = s[first_close.end():]
    low, out, i = s.lower(), [], 0
    while (m := _THINK_OPEN.search(s, i)) is not None:
        out.append(s[i:m.start()])
        close = low.find(f"</{m.group(1).lower()}>", m.end())
        if close < 0:
            return "".join(out)
        i = close + len(m.group(1)) + 3
    out.append(s[i:])
    return "".join(out)


def _find_start(text: str) -> int | None:
    m = _LINE_START.search(text)  # a statement that starts a line beats a "select" inside prose
    if m:
        return m.start(1)
    upper = [m for m in _START.finditer(text) if m.group(1).isupper()]
    if upper:
        return upper[0].start()
    m = _START.search(text)
    return m.start() if m else None


def clean_sql(text: str | None) -> CleanResult:
    removed: list[str] = []

    def tag(name: str) -> None:
        if name not in removed:
            removed.append(name)

    if text is None or not str(text).strip():
        return CleanResult("", ("empty",))
    s = str(text)

    stripped = _strip_think(s)
    if stripped != s:
        tag("think")
        s = stripped

    fences = list(_FENCE.finditer(s))
    if fences:
        chosen = next((m for m in fences if _START.search(m.group(2))), fences[0])
        tag("fenced")
        if s[:chosen.start()].strip():
            tag("prose")
        if s[chosen.end():].strip():
            tag("trailing")
        s = chosen.group(2)
    else:
        inline = _INLINE.match(s)
        if inline:
            s = inline.group(1)
            tag("fenced")

    start = _find_start(s)
    if start is None:
        tag("empty")
        return CleanResult("", tuple(removed))
    before = s[:start]
    if before.strip():
        without_prefix = _PREFIX.sub("", before.rstrip(" \t"))
        if without_prefix != before.rstrip(" \t"):
            tag("prefix")
        if without_prefix.strip():
            tag("prose")
    s = s[start:]

    stmt, rest = _split_first_statement(s)
    if rest.strip():
        tag("multi_statement" if _SQL_KEYWORD.match(rest) else "trailing")
    stmt, cut = _cut_trailing_prose(stmt)
    if cut:
        tag("trailing")
    sql = stmt.strip().rstrip("`").strip()
    if not sql:
        tag("empty")
    return CleanResult(sql, tuple(removed))
