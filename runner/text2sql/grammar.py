"""Constrained greedy decoding: the student may only write queries of WikiSQL's query language.

WikiSQL's gold queries all have one shape, and every value in them comes from the question:

    SELECT [AGG(]"column"[)] FROM table [WHERE "column" OP value [AND "column" OP value]...]

with AGG in COUNT/MAX/MIN/SUM/AVG, OP in = > <, at most 4 conditions, the table and columns
those of the prompt's CREATE TABLE line, a 'quoted' value a substring of the question (any case:
the executor's NKEY collation ignores case) and a number equal to one of the question's numbers
(`5,291` is 5291, `–2` is -2). Every gold query of the first 6,000 WikiSQL questions is in this
language (tests/text2sql/test_grammar.py checks 3,000).

At each step the student's most likely token is kept if the text so far plus that token is still
a prefix of such a query (its end-of-turn token only once the query is complete); otherwise the
next most likely, and so on (PICARD, Scholak et al. 2021, does the same with a full SQL parser).
What it reads is the prompt the student sees (schema and question), never a gold answer. It
changes the answers, so the eval stages say which decoding made them (`<stage>.decoding`).

Works on bytes: a token of a byte-level BPE can hold part of a UTF-8 character.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

END = -1  # an outcome: the text ended inside this part of the query, still on a valid path
AGGS = (b"COUNT(", b"MAX(", b"MIN(", b"SUM(", b"AVG(")
OPS = (b"=", b">", b"<")
MAX_CONDITIONS = 4  # WikiSQL's most
_SCHEMA = re.compile(r'CREATE TABLE (\S+) \((.*)\);')
_COLUMN = re.compile(r'"((?:[^"]|"")*)" [A-Z]+')
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3})")
_NUMBER = re.compile(rb"-?\d+(\.\d+)?")

Outcomes = list[int]


def prompt_parts(user: str) -> tuple[str, list[str], str]:
    """(table name, columns, question) of a Text2SQL prompt (runner.text2sql.prompt's layout)."""
    schema = _SCHEMA.search(user)
    if schema is None or "Question:" not in user:
        raise ValueError("constrained decoding needs a Text2SQL prompt with a CREATE TABLE line and "
                         f"'Question:'; got {user[:80]!r}")
    columns = [c.replace('""', '"') for c in _COLUMN.findall(schema.group(2))]
    return schema.group(1), columns, user.rsplit("Question:", 1)[1].strip()


class WikiSqlGrammar:
    """Prefix checks against the query language above for one prompt."""

    def __init__(self, table: str, columns: Sequence[str], question: str, max_conditions: int = MAX_CONDITIONS):
        self.from_table = b" FROM " + table.encode()
        self.columns = [b'"' + c.replace('"', '""').encode() + b'"' for c in columns]
        self.question = question.lower()  # values match case-insensitively, as NKEY compares them
        self.letters = {c for c in self.question if not c.isascii()}
        numeric = _DIGIT_COMMA.sub("", question).replace("–", "-").replace("−", "-")
        found = [m.group(0) for m in _NUMBER.finditer(numeric.encode())]
        self.numbers = sorted(set(found) | {n.lstrip(b"-") for n in found})  # 1995-96: 96 as well as -96
        self.number_values = {float(n) for n in self.numbers}
        self.max_conditions = max_conditions

    # --- parts: each maps (text, position) to outcomes: end positions of a full match, or END --
    @staticmethod
    def _lit(b: bytes, i: int, s: bytes) -> Outcomes:
        if len(b) - i < len(s):
            return [END] if s.startswith(b[i:]) else []
        return [i + len(s)] if b.startswith(s, i) else []

    def _any(self, b: bytes, i: int, options: Sequence[bytes]) -> Outcomes:
        out: set[int] = set()
        for s in options:
            out.update(self._lit(b, i, s))
        return list(out)

    def _in_question(self, content: bytes) -> bool:
        """Is `content` (maybe ending inside a character) the start of a substring of the question?"""
        try:
            text, tail = content.decode(), b""
        except UnicodeDecodeError as e:
            if e.reason != "unexpected end of data":
                return False
            text, tail = content[:e.start].decode(errors="replace"), content[e.start:]
        low = text.lower()
        if not tail:
            return low in self.question
        # the last character is incomplete: one of the question's letters, in either case, must fit
        return any(low + c in self.question for c in self.letters
                   if c.encode().startswith(tail) or c.upper().encode().startswith(tail))

    def _string(self, b: bytes, i: int) -> Outcomes:
        """'value' with '' for a quote; the value a non-empty substring of the question."""
        if i == len(b):
            return [END]
        if b[i] != 0x27:
            return []
        content, j = bytearray(), i + 1
        while j < len(b):
            if b[j] == 0x27:
                if j + 1 == len(b):  # a closing quote, or the first half of ''
                    out = [j + 1] if content else []
                    return out + ([END] if self._in_question(bytes(content) + b"'") else [])
                if b[j + 1] != 0x27:
                    return [j + 1] if content else []
                content.append(0x27)
                j += 2
            else:
                content.append(b[j])
                j += 1
            if not self._in_question(bytes(content)):
                return []
        return [END]

    def _number(self, b: bytes, i: int) -> Outcomes:
        """A number (-?digits[.digits]) equal to one of the question's numbers; while it is being
        written, a prefix of one of them (50000.0 stands for 50,000.00)."""
        j = i
        while j < len(b) and b[j] in b"-.0123456789" and any(n.startswith(b[i:j + 1]) for n in self.numbers):
            j += 1
        out: set[int] = {k for k in range(i + 1, j + 1)
                         if _NUMBER.fullmatch(b, i, k) and float(b[i:k]) in self.number_values}
        if j == len(b) and (j == i or self.numbers):
            out.add(END)
        return list(out)

    def _seq(self, b: bytes, i: int, parts: Sequence[Callable[[bytes, int], Outcomes]]) -> Outcomes:
        here, ended = {i}, False
        for part in parts:
            nxt: set[int] = set()
            for j in here:
                for o in part(b, j):
                    if o == END:
                        ended = True
                    else:
                        nxt.add(o)
            here = nxt
            if not here:
                break
        return list(here) + ([END] if ended else [])

    def _column(self, b: bytes, i: int) -> Outcomes:
        return self._any(b, i, self.columns)

    def _select(self, b: bytes, i: int) -> Outcomes:
        plain = self._column(b, i)
        agg = self._seq(b, i, [lambda b, j: self._any(b, j, AGGS), self._column,
                               lambda b, j: self._lit(b, j, b")")])
        return list(set(plain + agg))

    def _condition(self, b: bytes, i: int) -> Outcomes:
        space = lambda b, j: self._lit(b, j, b" ")  # noqa: E731
        value = lambda b, j: list(set(self._string(b, j) + self._number(b, j)))  # noqa: E731
        return self._seq(b, i, [self._column, space, lambda b, j: self._any(b, j, OPS), space, value])

    def _query(self, b: bytes) -> Outcomes:
        head = self._seq(b, 0, [lambda b, j: self._lit(b, j, b"SELECT "), self._select,
                                lambda b, j: self._lit(b, j, self.from_table)])
        out, ended = {o for o in head if o != END}, END in head
        frontier, keyword = set(out), b" WHERE "
        for _ in range(self.max_conditions):
            nxt: set[int] = set()
            for j in frontier:
                for o in self._seq(b, j, [lambda b, k, w=keyword: self._lit(b, k, w), self._condition]):
                    if o == END:
                        ended = True
                    else:
                        nxt.add(o)
            out |= nxt
            frontier, keyword = nxt, b" AND "
        return list(out) + ([END] if ended else [])

    def state(self, text: bytes) -> tuple[bool, bool]:
        """(viable: `text` begins some query of the language, complete: `text` is one)."""
        out = self._query(text)
        complete = len(text) in out
        return complete or END in out, complete


def from_prompt(user: str) -> WikiSqlGrammar:
    """The grammar of one Text2SQL prompt (runner.lm.constraint builds it by name: `wikisql`)."""
    return WikiSqlGrammar(*prompt_parts(user))
