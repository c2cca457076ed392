"""The case tables are listed once (forensics.schema.CASE_TABLES) and each has one owner: the case itself or one
log family, which declares it in its package's TABLES."""
from __future__ import annotations

import os

import duckdb

from forensics import case as case_db
from forensics import sources
from forensics.schema import CASE_OWN_TABLES, CASE_TABLES, FAMILY_TABLES, SCHEMA_SQL, TABLE_DDL
from forensics.sources import litellm, nginx, provider

FAMILIES = {"litellm": litellm, "nginx": nginx, "provider": provider}


def test_every_case_table_has_exactly_one_owner():
    owners = {t: [name for name, pkg in FAMILIES.items() if t in pkg.TABLES + getattr(pkg, "COVERAGE", ())]
              for t in CASE_TABLES}
    for t in CASE_OWN_TABLES:
        owners[t].append("case")
    assert {t: len(o) for t, o in owners.items()} == dict.fromkeys(CASE_TABLES, 1), owners


def test_families_declare_only_case_tables():
    for name, pkg in FAMILIES.items():
        assert pkg.TABLES and set(pkg.TABLES) <= set(FAMILY_TABLES), name
    assert set(CASE_OWN_TABLES) <= set(CASE_TABLES)
    assert sorted(t for pkg in FAMILIES.values() for t in pkg.TABLES) == sorted(FAMILY_TABLES)


def test_every_source_belongs_to_a_family_package_and_maps_to_its_tables():
    """ingest checks a file's rows in the tables of its source's family: TABLES_OF_FAMILY is built from TABLES."""
    by_source = ({id(litellm.SOURCE): litellm} | {id(s): nginx for s in nginx.SOURCES}
                 | {id(s): provider for s in provider.SOURCES})
    assert sorted(map(id, sources.SOURCES)) == sorted(by_source)
    for source in sources.SOURCES:
        assert sources.TABLES_OF_FAMILY[source.family] == by_source[id(source)].TABLES
    # detection order: the nginx error log before the access log
    assert [s.family for s in sources.SOURCES] == ["litellm", "openai", "anthropic", "nginx", "nginx"]


def test_the_schema_creates_exactly_the_case_tables(tmp_path):
    assert list(TABLE_DDL) == list(CASE_TABLES)
    assert case_db.SCHEMA_SQL is SCHEMA_SQL
    con = case_db.connect(tmp_path / "c.duckdb")
    try:
        made = [t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY table_oid").fetchall()]
    finally:
        con.close()
    assert made == list(CASE_TABLES)


def test_a_case_database_spills_past_its_memory_limit(tmp_path, sample_case_copy):
    """Issue #19: DuckDB's buffer pool grows to 80 % of RAM by default and kept 2 GB more at 10 M lines than at
    1 M: a case file is opened under CASE_MEMORY_LIMIT and spills past it; read-only, into a folder of this
    process's own (not beside the case, which may sit on read-only media)."""
    from forensics import case as case_db

    def limit(con):
        (text,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
        return text

    con = case_db.connect(tmp_path / "new.duckdb")
    probe = duckdb.connect()
    probe.execute(f"SET memory_limit = '{case_db.CASE_MEMORY_LIMIT}'")
    (want,) = probe.execute("SELECT current_setting('memory_limit')").fetchone()
    assert limit(con) == want
    con.close()
    ro = case_db.connect(sample_case_copy, read_only=True)
    assert limit(ro) == want
    (spill,) = ro.execute("SELECT current_setting('temp_directory')").fetchone()
    assert not spill.startswith(str(sample_case_copy)) and str(os.getpid()) in spill
    ro.close()
    assert limit(case_db.connect(":memory:")) != want          # an in-memory case has nowhere to spill
