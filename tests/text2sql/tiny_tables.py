"""Two small WikiSQL-style tables in TabFact's form (lowercased, re-tokenised), for unit tests."""
from __future__ import annotations

from runner.text2sql.data import Table

PLAYERS = Table(
    id="1-10015132-11",
    header=["player", "no", "nationality", "position", "years in toronto", "school / club team"],
    types=["text", "real", "text", "text", "text", "text"],
    rows=[
        ["aleksandar radojević", 25, "serbia", "center", "1999 - 2000", "barton cc (ks)"],
        ["shawn respert", 31, "united states", "guard", "1997 - 98", "michigan state"],
        ["quentin richardson", None, "united states", "forward", "2013 - present", "depaul"],
        ["alvin robertson", 7.5, "united states", "guard", "1995 - 96", "arkansas"],
        ["carlos rogers", 33, "united states", "forward - center", "1995 - 98", "tennessee state"],
        ["st louis", 1, "", "guard", "1990", "st. louis"],
    ],
    page_title="toronto raptors all - time roster",
)
DUPLICATE_HEADERS = Table(id="2-1-1", header=["name", "Name", "", "points"],
                          types=["text", "text", "text", "real"],
                          rows=[["a", "b", "c", 1], ["d", "e", "f", 2.5]])


def tables() -> dict[str, Table]:
    return {t.id: t for t in (PLAYERS, DUPLICATE_HEADERS)}
