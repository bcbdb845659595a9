import json

import polars as pl
import pytest

import runner.text2sql.data as data_mod
from runner.core.stage import ConfigError
from runner.text2sql.data import find_data_root, load_questions, load_tables
from tests.conftest import REPO, data_dir, requires_data

OFFICIAL_Q = [
    {"phase": 1, "table_id": "1-10015132-11", "question": "What position does the player who played for butler cc (ks) play?",
     "sql": {"sel": 3, "conds": [[5, 0, "Butler CC (KS)"]], "agg": 0}},
    {"phase": 2, "table_id": "1-10015132-11", "question": "How many players wore number 25?",
     "sql": {"sel": 0, "conds": [[1, 0, 25]], "agg": 3}},
]
OFFICIAL_T = {"id": "1-10015132-11", "header": ["Player", "No.", "Nationality", "Position", "Years in Toronto",
                                                "School/Club Team"],
              "types": ["text", "text", "text", "text", "text", "text"],
              "rows": [["Antonio Lang", "21", "United States", "Guard-Forward", "1999-2000", "Duke"],
                       ["Aleksandar Radojević", "25", "Serbia", "Center", "1999-2000", "Barton CC (KS)"]],
              "page_title": "Toronto Raptors all-time roster", "name": "table_10015132_11"}


def write_official(folder, split="dev"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(q) + "\n" for q in OFFICIAL_Q))
    (folder / f"{split}.tables.jsonl").write_text(json.dumps(OFFICIAL_T) + "\n")


@pytest.mark.parametrize("layout", ["wikisql", "wikisql/data"])
def test_official_layout(tmp_path, layout):
    write_official(tmp_path / layout)
    q = load_questions(tmp_path, source="official", split="dev")
    assert q.columns == ["question_id", "table_id", "question", "sel", "agg", "conds", "gold_result", "sql_from"]
    assert q["question_id"].to_list() == ["official-dev-1", "official-dev-2"]
    assert q["sel"].to_list() == [3, 0] and q["agg"].to_list() == [0, 3]
    assert json.loads(q["conds"][1]) == [[1, 0, 25]]  # official numbers stay numbers
    assert q["gold_result"].to_list() == [None, None] and q["sql_from"].to_list() == [None, None]
    tables = load_tables(tmp_path, {"1-10015132-11"}, source="official", split="dev")
    t = tables["1-10015132-11"]
    assert t.header[0] == "Player" and t.rows[1][0] == "Aleksandar Radojević"
    assert t.page_title == "Toronto Raptors all-time roster"


def test_official_tables_missing_is_explained(tmp_path):
    write_official(tmp_path / "wikisql")
    (tmp_path / "wikisql" / "dev.tables.jsonl").unlink()
    with pytest.raises(ConfigError, match="dev.tables.jsonl not found"):
        load_tables(tmp_path, {"1-10015132-11"}, source="official", split="dev")
    with pytest.raises(ConfigError, match="test.jsonl not found"):
        load_questions(tmp_path, source="official", split="test")


def test_missing_table_is_an_error(tmp_path):
    write_official(tmp_path / "wikisql")
    with pytest.raises(ValueError, match="1 table.*e.g. 9-9-9"):
        load_tables(tmp_path, {"1-10015132-11", "9-9-9"}, source="official", split="dev")


def test_bad_source_and_split(tmp_path):
    (tmp_path / "wikisql").mkdir()
    with pytest.raises(ConfigError, match="not one of"):
        load_questions(tmp_path, source="spider")
    with pytest.raises(ConfigError, match="only has WikiSQL train tables"):
        load_questions(tmp_path, source="tabfact", split="dev")


def test_find_data_root(tmp_path, monkeypatch):
    (tmp_path / "root" / "wikisql").mkdir(parents=True)
    monkeypatch.setenv("RUNNER_DATA_DIR", str(tmp_path / "elsewhere"))
    assert find_data_root(str(tmp_path / "root")) == tmp_path / "root"  # config beats the env var
    assert find_data_root(str(tmp_path / "root" / "wikisql")) == tmp_path / "root"
    monkeypatch.setenv("RUNNER_DATA_DIR", str(tmp_path / "root"))
    assert find_data_root(None) == tmp_path / "root"


def test_find_data_root_errors_name_paths_and_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(ConfigError) as e:
        find_data_root(str(tmp_path / "cfg"))
    msg = str(e.value)
    assert str(tmp_path / "cfg" / "wikisql") in msg and "dataset.data_dir" in msg
    assert "RUNNER_DATA_DIR" in msg and "python -m runner.data wikisql" in msg
    with pytest.raises(ConfigError) as e:
        find_data_root(None)
    assert str(tmp_path / "env" / "wikisql") in str(e.value)
    monkeypatch.delenv("RUNNER_DATA_DIR")
    monkeypatch.setattr(data_mod, "SHARED_DATA", tmp_path / "no-shared")
    with pytest.raises(ConfigError, match="RUNNER_DATA_DIR is not set"):
        find_data_root(None)


def test_find_data_root_defaults_to_shared_data_beside_the_repo(tmp_path, monkeypatch):
    # Without the env var (no Makefile), <repo>/../shared/data is found whatever the cwd.
    assert data_mod.SHARED_DATA == REPO.parent / "shared" / "data"  # from the package, not the cwd
    (tmp_path / "shared" / "wikisql").mkdir(parents=True)
    monkeypatch.delenv("RUNNER_DATA_DIR", raising=False)
    monkeypatch.setattr(data_mod, "SHARED_DATA", tmp_path / "shared")
    monkeypatch.chdir(tmp_path)
    assert find_data_root(None) == tmp_path / "shared"


def test_malformed_question_line_names_the_line(tmp_path):
    write_official(tmp_path / "wikisql")
    with open(tmp_path / "wikisql" / "dev.jsonl", "a") as f:
        f.write('{"table_id": "x"}\n')
    with pytest.raises(ValueError, match=r"dev.jsonl:3"):
        load_questions(tmp_path, source="official", split="dev")


@requires_data
def test_real_tabfact_files():
    root = data_dir()
    matched = load_questions(root)
    assert matched.height == 44_965 and matched["question_id"].n_unique() == matched.height
    assert matched["question_id"][0] == "tabfact-train-matched-1"
    assert matched["gold_result"].null_count() == 0
    assert set(matched["sql_from"].unique()) == {"official", "reconstructed"}
    first = matched.row(0, named=True)
    assert first["table_id"] == "1-10007452-3" and first["agg"] == 3 and json.loads(first["gold_result"]) == [1]
    everything = load_questions(root, matched_only=False)
    assert everything.height == 49_811 and everything["gold_result"].null_count() == 49_811
    ids = set(matched["table_id"].head(200))
    tables = load_tables(root, ids)
    assert set(tables) == ids
    t = tables["1-10007452-3"]
    assert t.header[-1] == "fuel propulsion" and len(t.types) == len(t.header)
    assert all(len(r) == len(t.header) for r in t.rows)
    assert matched.schema["conds"] == pl.String
