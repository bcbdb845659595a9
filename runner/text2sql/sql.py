"""Rendering WikiSQL's structured queries as SQLite SQL over tables with real column names.

One renderer serves the gold queries, the simulated teacher's perturbations and the tests,
so all of them quote identifiers and literals the same way.
"""
from __future__ import annotations

import re

AGGS = ("", "MAX", "MIN", "COUNT", "SUM", "AVG")
OPS = ("=", ">", "<", "OP")
_NUMBER = re.compile(r"^[+-]? ?(\d+(\.\d+)?|\.\d+)$")
_NUMBER_IN_TEXT = re.compile(r"[+-]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def table_name(table_id: str) -> str:
    """WikiSQL's own naming: `table_<id with '-' replaced by '_'>`."""
    return "table_" + re.sub(r"[^0-9A-Za-z_]", "_", table_id)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def column_names(header: list[str]) -> list[str]:
    """Real header names made unique and non-empty (SQLite needs distinct column names)."""
    seen: dict[str, int] = {}
    out = []
    for i, h in enumerate(header):
        name = (h or "").strip() or f"col{i}"
        key = name.lower()
        if key in seen:
            seen[key] += 1
            name = f"{name}_{seen[key]}"
            key = name.lower()
        seen.setdefault(key, 1)
        out.append(name)
    return out


def parse_number(value: object) -> float | int | None:
    """WikiSQL/TabFact number rule: '- 6', '1,406,380', '13.0'; None when not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    s = str(value).strip().replace(",", "").replace(" ", "")
    if not _NUMBER.match(s):
        return None
    f = float(s)
    return int(f) if f.is_integer() and "." not in s else f


def number_in_text(value: object) -> float | int | None:
    """The one number inside a value such as '$50,000', '29,500%', '42¢', '#21', '–6' (en dash).

    None when there is no number or more than one ('1995-96'). WikiSQL's official evaluator
    also falls back to the number inside a string for real columns.
    """
    s = str(value).replace("\u2212", "-").replace("\u2013", "-")  # minus sign, en dash as minus
    found = _NUMBER_IN_TEXT.findall(s)
    return parse_number(found[0]) if len(found) == 1 else None


def render_literal(value: object, column_type: str) -> str:
    if column_type == "real":
        # A quoted string never equals a REAL cell, so '$50,000' must become 50000.
        num = parse_number(value)
        if num is None:
            num = number_in_text(value)
        if num is not None:
            return repr(num) if isinstance(num, float) else str(num)
    return quote_literal(str(value))


def render_sql(table: str, columns: list[str], types: list[str], sel: int, agg: int,
               conds: list[list]) -> str:
    """SELECT [AGG](col) FROM table [WHERE col op value AND ...] with quoted real names."""
    target = quote_ident(columns[sel])
    select = f"{AGGS[agg]}({target})" if AGGS[agg] else target
    sql = f"SELECT {select} FROM {table}"
    where = [f"{quote_ident(columns[c])} {OPS[op]} {render_literal(v, types[c])}" for c, op, v in conds]
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql
