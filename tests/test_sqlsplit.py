"""The statement splitter: what PostgreSQL considers one statement, and what needs no transaction."""

from __future__ import annotations

import pytest

from actions.sqlsplit import needs_no_transaction, non_transactional_reason, split_sql


def texts(sql: str) -> list[str]:
    return [s.text for s in split_sql(sql)]


def test_plain_statements_with_lines_and_missing_final_semicolon() -> None:
    sql = "CREATE TABLE a (x int);\n\n-- a comment\nINSERT INTO a VALUES (1);\nSELECT 1"
    stmts = split_sql(sql)
    assert [s.text for s in stmts] == ["CREATE TABLE a (x int)", "INSERT INTO a VALUES (1)", "SELECT 1"]
    assert [s.line for s in stmts] == [1, 4, 5]


def test_empty_statements_and_comment_only_files_are_skipped() -> None:
    assert texts(";;  ; -- nothing\n/* still nothing */ ;") == []
    assert texts("") == []


def test_semicolons_inside_comments_do_not_split() -> None:
    sql = "SELECT 1 -- ; not here\n; /* outer ; /* nested ; */ still ; */ SELECT 2;"
    assert texts(sql) == ["SELECT 1 -- ; not here", "SELECT 2"]


def test_quoted_strings_and_identifiers() -> None:
    sql = """INSERT INTO t VALUES ('it''s; fine');UPDATE "we;ird" SET "a""b" = 1;SELECT E'back\\'slash;';SELECT 3"""
    assert texts(sql) == [
        "INSERT INTO t VALUES ('it''s; fine')",
        'UPDATE "we;ird" SET "a""b" = 1',
        "SELECT E'back\\'slash;'",
        "SELECT 3",
    ]


def test_standard_strings_do_not_treat_backslash_as_escape() -> None:
    # with standard_conforming_strings (the default) '\' is a complete literal
    assert texts("SELECT '\\'; SELECT 2") == ["SELECT '\\'", "SELECT 2"]


def test_identifier_ending_in_e_is_not_an_escape_string() -> None:
    assert texts("SELECT note'x'; SELECT 2") == ["SELECT note'x'", "SELECT 2"]


def test_dollar_quoted_bodies() -> None:
    sql = (
        "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n"
        "CREATE FUNCTION g() RETURNS int AS $body$ BEGIN RETURN 1; /* $$ */ END; $body$ LANGUAGE plpgsql;\n"
        "DO $$ BEGIN PERFORM 1; END $$"
    )
    stmts = split_sql(sql)
    assert len(stmts) == 3
    assert stmts[1].text.endswith("$body$ LANGUAGE plpgsql")
    assert stmts[2].text == "DO $$ BEGIN PERFORM 1; END $$"
    assert stmts[2].line == 3


def test_positional_parameter_is_not_a_dollar_quote() -> None:
    assert texts("PREPARE p AS SELECT $1; SELECT 2") == ["PREPARE p AS SELECT $1", "SELECT 2"]


def test_sql_standard_function_body_is_one_statement() -> None:
    sql = ("CREATE FUNCTION h(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT a + 1; "
           "SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END; END; SELECT 9")
    stmts = texts(sql)
    assert len(stmts) == 2
    assert stmts[1] == "SELECT 9"


def test_unterminated_constructs_do_not_hang() -> None:
    assert len(split_sql("SELECT 'open")) == 1
    assert len(split_sql("SELECT $$ open")) == 1
    assert len(split_sql("SELECT 1 /* open")) == 1


@pytest.mark.parametrize("sql", [
    "CREATE INDEX CONCURRENTLY i ON t (x);",
    "create unique index concurrently i on t (x)",
    "DROP INDEX CONCURRENTLY IF EXISTS i;",
    "REINDEX (VERBOSE) TABLE CONCURRENTLY t;",
    "VACUUM ANALYZE t;",
    "CREATE DATABASE x;",
    "ALTER SYSTEM SET work_mem = '8MB';",
    "BEGIN; CREATE TABLE t (x int); COMMIT;",
    "START TRANSACTION; SELECT 1; COMMIT",
    "-- leading comment\nCREATE TABLE t (x int);\n/* c */ CREATE INDEX CONCURRENTLY i ON t (x);",
])
def test_non_transactional_files(sql: str) -> None:
    assert needs_no_transaction(sql)


@pytest.mark.parametrize("sql", [
    "CREATE INDEX i ON t (x);",
    "ALTER TYPE mood ADD VALUE 'meh';",
    "DO $$ BEGIN CREATE INDEX CONCURRENTLY i ON t (x); COMMIT; END $$;",
    "SELECT 'VACUUM'; -- VACUUM\n",
    "CREATE TABLE concurrently_seen (begin_at int);",
])
def test_transactional_files(sql: str) -> None:
    assert not needs_no_transaction(sql)


def test_add_value_only_flagged_before_pg12() -> None:
    sql = "ALTER TYPE mood ADD VALUE 'meh';"
    assert non_transactional_reason(sql, server_version=110000) is not None
    assert non_transactional_reason(sql, server_version=150000) is None


def test_function_body_after_another_statement_is_one_statement() -> None:
    # a BEGIN ATOMIC body is recognised wherever the CREATE FUNCTION stands in the file, not only first
    sql = ("CREATE TABLE t (x int);\nCREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\n"
           "BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END;\nSELECT f()")
    stmts = split_sql(sql)
    assert [s.line for s in stmts] == [1, 2, 4]
    assert stmts[1].text.endswith("END") and stmts[2].text == "SELECT f()"


def test_semicolons_inside_parentheses_do_not_split() -> None:
    # psql's rule: a multi-action rule is one statement
    sql = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1"
    assert texts(sql) == [sql.rsplit("; ", 1)[0], "SELECT 1"]
    # a parameter named like a keyword, inside parentheses, opens no block
    assert len(texts("CREATE FUNCTION g(begin int) RETURNS int LANGUAGE sql RETURN 1; SELECT 2")) == 2


def test_non_ascii_identifiers() -> None:
    # PostgreSQL takes every non-ASCII character as an identifier character (unquoted names included)
    assert texts("CREATE TABLE café (prix€ int); SELECT naïve$1$ FROM café") == [
        "CREATE TABLE café (prix€ int)", "SELECT naïve$1$ FROM café"]
    assert texts("SELECT $é$ ; $é$; SELECT 2") == ["SELECT $é$ ; $é$", "SELECT 2"]
    assert texts("SELECT élan FROM t; SELECT 2") == ["SELECT élan FROM t", "SELECT 2"]
