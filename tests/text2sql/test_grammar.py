"""Constrained decoding (runner.text2sql.grammar): the grammar accepts every WikiSQL gold query
and little else, token bytes round-trip, and a random model decoded under it writes only
queries of the language, where plain greedy writes anything."""
from __future__ import annotations

import json

import pytest

from runner.core.stage import ConfigError
from runner.lm.constraint import token_bytes
from runner.lm.generate import generate_torch, stop_token_ids
from runner.text2sql.grammar import WikiSqlGrammar, prompt_parts
from tests.conftest import requires_data
from tests.lm.tiny_lm import tiny_model, tiny_model_dir  # noqa: F401 (fixtures)

USER = ('CREATE TABLE t ("home team" TEXT, "crowd" REAL, "away team" TEXT, "say ""hi""" TEXT);\n\n'
        "Question: What is the crowd when South Melbourne played with 5,291 fans and it's –2?")


@pytest.fixture
def grammar():
    return WikiSqlGrammar(*prompt_parts(USER))


def test_prompt_parts_reads_table_columns_and_question():
    table, cols, question = prompt_parts(USER)
    assert table == "t" and cols == ["home team", "crowd", "away team", 'say "hi"']
    assert question.startswith("What is the crowd") and question.endswith("–2?")
    with pytest.raises(ValueError, match="CREATE TABLE"):
        prompt_parts("just a question")


@pytest.mark.parametrize("text", [
    'SELECT "crowd" FROM t',
    'SELECT AVG("crowd") FROM t',
    'SELECT COUNT("away team") FROM t WHERE "home team" = \'south melbourne\'',
    'SELECT "crowd" FROM t WHERE "away team" = \'South Melbourne\'',   # any case
    'SELECT "crowd" FROM t WHERE "crowd" > 5291',                      # 5,291 in the question
    'SELECT "crowd" FROM t WHERE "crowd" = -2',                        # –2 (en dash) in the question
    'SELECT "crowd" FROM t WHERE "away team" = \'it\'\'s\'',            # '' is a quote
    'SELECT "say ""hi""" FROM t',
    'SELECT "crowd" FROM t WHERE "crowd" > 5291 AND "crowd" < 2 AND "crowd" < 2 AND "crowd" < 2',
])
def test_complete_queries(grammar, text):
    assert grammar.state(text.encode()) == (True, True)


@pytest.mark.parametrize("text", ["", "SEL", 'SELECT "cr', 'SELECT AVG("crowd")', 'SELECT "crowd" FROM t WHERE',
                                  'SELECT "crowd" FROM t WHERE "away team" = \'south mel',
                                  'SELECT "crowd" FROM t WHERE "crowd" = 52',   # on the way to 5291
                                  'SELECT "crowd" FROM t WHERE "away team" = \'\''])  # '' may open an escape
def test_prefixes_are_viable_not_complete(grammar, text):
    assert grammar.state(text.encode()) == (True, False)


@pytest.mark.parametrize("text", [
    'select "crowd"',                                                    # the keywords as WikiSQL writes them
    'SELECT "crowdx',                                                    # not a column
    'SELECT AVG("crowd" FROM t',
    'SELECT "crowd" FROM table',                                         # not the prompt's table
    'SELECT "crowd" FROM t WHERE "away team" = \'south melx',            # not in the question
    'SELECT "crowd" FROM t WHERE "away team" = \'won won won',           # a loop the question does not hold
    'SELECT "crowd" FROM t WHERE "crowd" > 5292',
    'SELECT "crowd" FROM t WHERE "crowd" > 5291 AND "crowd" = 29',      # 29 is inside 5291, not a number of it
    'SELECT "crowd" FROM t WHERE "away team" = \'it\' OR',               # AND only
    'SELECT "crowd" FROM t WHERE "crowd" > 5291 AND "crowd" < 2 AND "crowd" < 2 AND "crowd" < 2 AND',  # 5th
    'SELECT "crowd" FROM t;',
])
def test_dead_ends(grammar, text):
    assert grammar.state(text.encode()) == (False, False)


def test_values_in_other_scripts_match_byte_by_byte():
    g = WikiSqlGrammar("t", ["tamil"], "Which Telugu has a Tamil தமிழ் of pūsam?")
    full = 'SELECT "tamil" FROM t WHERE "tamil" = \'தமிழ்\''.encode()
    for k in range(len(full) + 1):  # every byte prefix, including inside a character, is viable
        assert g.state(full[:k])[0], full[:k]
    assert g.state(full)[1]
    assert not g.state('SELECT "tamil" FROM t WHERE "tamil" = \'தமம'.encode())[0]


def test_token_bytes_round_trip(tiny_model):
    _, tok = tiny_model
    pieces = token_bytes(tok)
    text = 'SELECT "crowd" FROM t WHERE "x" = \'தமிழ் pūsam\''
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert b"".join(pieces[i] for i in ids) == text.encode()
    assert all(pieces[i] is None for i in tok.all_special_ids)


def _conversation(cols, question):
    schema = ", ".join(f'"{c}" TEXT' for c in cols)
    return [{"role": "system", "content": "Return only the SQL query."},
            {"role": "user", "content": f"CREATE TABLE t ({schema});\n\nQuestion: {question}"}]


def test_a_random_model_writes_only_the_language_under_the_constraint(tiny_model):
    model, tok = tiny_model
    convs = [_conversation(["player", "team", "year"][: 2 + i % 2], f"Which player was on team v{i} in {1990 + i}?")
             for i in range(12)]
    plain = generate_torch(model, tok, convs, max_new_tokens=40, batch_size=4)
    constrained = generate_torch(model, tok, convs, max_new_tokens=40, batch_size=4, constrain="wikisql")
    stops = set(stop_token_ids(tok, model))
    grammars = [WikiSqlGrammar(*prompt_parts(c[1]["content"])) for c in convs]
    assert not all(g.state(p.text.encode())[0] for g, p in zip(grammars, plain)), \
        "the random model must write outside the language unconstrained, or this test shows nothing"
    for g, c in zip(grammars, constrained):
        viable, complete = g.state(c.text.encode())
        assert viable, c.text
        if c.token_ids and c.token_ids[-1] in stops:  # it stopped: only a complete query may stop
            assert complete, c.text
    # batched equals one at a time under the constraint too
    single = generate_torch(model, tok, convs[:4], max_new_tokens=40, batch_size=1, constrain="wikisql")
    assert [s.token_ids for s in single] == [c.token_ids for c in constrained[:4]]


def test_mlx_students_refuse_the_constraint(tiny_model_dir):
    from runner.providers.local_hf import LocalHFProvider

    with pytest.raises(ConfigError, match="torch backend only"):
        LocalHFProvider(str(tiny_model_dir), backend="mlx", constrain="wikisql").validate()
    with pytest.raises(ConfigError, match="constrain"):
        LocalHFProvider(str(tiny_model_dir), constrain="sql").validate()


@requires_data
def test_every_gold_query_is_in_the_language():
    """The grammar's cost on correct answers is zero: every gold query of 3,000 WikiSQL questions
    (rendered as the load stage renders them, prompted as the prompt stage prompts) is complete."""
    from runner.text2sql.data import find_data_root, load_questions, load_tables
    from runner.text2sql.database import table_schema
    from runner.text2sql.prompt import PromptTemplate
    from runner.text2sql.sql import render_sql

    root = find_data_root(None)
    questions = load_questions(root).head(3000)
    tables = load_tables(root, set(questions["table_id"].to_list()))
    template = PromptTemplate(rows_k=0)
    rejected = []
    for tid, question, sel, agg, conds in questions.select("table_id", "question", "sel", "agg", "conds").iter_rows():
        _, cols, types = table_schema(tables[tid])
        gold = render_sql("t", cols, types, sel, agg, json.loads(conds))
        g = WikiSqlGrammar(*prompt_parts(template.render(tables[tid], question, "t")[1]))
        if g.state(gold.encode()) != (True, True):
            rejected.append((question, gold))
    assert not rejected, rejected[:10]  # measured: 0 of the first 6,000 rejected


def test_pick_is_the_most_likely_allowed_token(tiny_model):
    """The first-byte shortcut and the top-64 scan change nothing: the pick equals a brute-force
    search over the whole vocabulary."""
    import torch

    from runner.lm.constraint import ConstrainedRow

    model, tok = tiny_model
    stops = stop_token_ids(tok, model)
    pieces = token_bytes(tok)
    _, cols, question = prompt_parts(USER)
    gen = torch.Generator().manual_seed(0)
    for text in ["", "SELECT ", 'SELECT "cr', 'SELECT "crowd" FROM t', 'SELECT "crowd" FROM t WHERE "away team" = \'So']:
        for _ in range(5):
            logits = torch.randn(len(tok), generator=gen)
            row = ConstrainedRow(WikiSqlGrammar("t", cols, question), pieces, stops)
            row.text = text.encode()
            brute = max((t for t in range(len(tok)) if row.allowed(t)), key=lambda t: logits[t].item())
            assert row.pick(logits, int(logits.argmax())) == brute
