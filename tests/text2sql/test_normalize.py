from runner.text2sql.normalize import format_number, nkey


def test_nkey_matches_tabfact_retokenised_cells():
    # The README's examples: WikiSQL literal vs TabFact cell.
    assert nkey("1995-96") == nkey("1995 - 96") == "199596"
    assert nkey("St. Louis") == nkey("st louis") == "stlouis"
    assert nkey("$33,120,440") == nkey("33120440")
    assert nkey("Patrick O'Bryant") == nkey("patrick o'bryant")


def test_nkey_numbers_are_formatted_first():
    assert nkey(13.0) == nkey(13) == nkey("13") == "13"
    assert nkey(2.5) == "25" and format_number(2.5) == "2.5" and format_number(13.0) == "13"


def test_nkey_unicode_and_none():
    assert nkey("Ｓｔ．Ｌｏｕｉｓ") == "stlouis"  # NFKC folds full-width forms
    assert nkey("José María") == "josémaría"  # letters beyond ASCII are kept
    assert nkey(None) == "" and nkey("  - ") == ""
    assert nkey("ﬁnal") == "final"  # ligature
