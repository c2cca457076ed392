"""Safe to share, for real (issue #15): what `report`, `detect`, `export` and `verify` write and accept when the
inputs, the case database or the bundle were made by someone hostile, or the disk fails half way.

All on the tiny case of conftest.py (a few hundred requests); the command line runs in-process where the DuckDB
file lock does not matter, in a subprocess where it does.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pytest

from forensics import cli

from tinycase import BIDI, FORMULA_IDS, HOSTILE_UA
from tiny_fixtures import tiny_case, tiny_case_file, tiny_logs  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
BUNDLE_ALWAYS = ("request.md", "requests.csv", "cost_per_minute.csv", "cost_per_hour.csv", "baseline_vs_incident.csv",
                 "reconciliation.csv", "chain_of_custody.json")


def main(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "forensics", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def outputs(tiny_case_file, tmp_path_factory):
    """report, detect and export run once on a writable copy of the tiny case."""
    base = tmp_path_factory.mktemp("outputs")
    case = base / "case.duckdb"
    shutil.copyfile(tiny_case_file, case)
    for args in (["report", case, "--out", base / "report"], ["detect", case, "--out", base / "scores.csv"],
                 ["export", case, "--out", base / "bundle"]):
        assert cli.main([str(a) for a in args]) == 0, args
    return base


# --- 4. detect's scores.csv ------------------------------------------------------------------------------------------

def test_scores_csv_neutralises_formula_cells(outputs):
    rows = csv_rows(outputs / "scores.csv")
    assert rows[0][:4] == ["request_id", "score", "flagged", "reasons"]
    ids = [r[0] for r in rows[1:]]
    assert len(ids) == 300
    for formula in ('=HYPERLINK("http://evil.example/x","id")', "+1+1", "-2-2", "@SUM(1,1)"):
        assert "'" + formula in ids and formula not in ids
    assert "\\x09TAB" in ids                                   # the tab made visible, as in the bundle's CSVs
    for row in rows[1:]:
        for cell in (row[0], row[3]):
            assert not cell.startswith(FORMULA_START), row
        float(row[1])                                           # the score stays a number
        assert row[2] in ("True", "False")
    assert not any(c in (outputs / "scores.csv").read_text(encoding="utf-8") for c in BIDI + "\t\r")


# --- bidi and zero-width characters ----------------------------------------------------------------------------------

def test_bidi_and_zero_width_characters_are_shown_escaped(outputs):
    report, bundle = outputs / "report", outputs / "bundle"
    docs = {p: p.read_text(encoding="utf-8") for p in
            [report / "report.html", report / "report.md", report / "steps.sql", report / "findings.json",
             bundle / "requests.csv", bundle / "request.md", bundle / "chain_of_custody.json", outputs / "scores.csv"]}
    for path, text in docs.items():
        raw = sorted({f"U+{ord(c):04X}" for c in text if c in BIDI})
        assert not raw, (path.name, raw)
    visible = "gnp.\\u202eexe\\u200b\\u2028\\u2029\\u2066\\u2067\\u2068\\u2069\\u061c\\ufeff"
    assert visible in docs[report / "report.html"]
    assert visible.replace("\\", "\\\\") in docs[report / "report.md"]     # Markdown escapes the backslash itself
    agents = {r[20] for r in csv_rows(bundle / "requests.csv")[1:]}
    assert agents == {"'=HYPERLINK(\"http://evil.example/x\",\"click\") " + visible}
    assert "id" + visible[len("gnp."):].replace("exe", "") in {r[0] for r in csv_rows(outputs / "scores.csv")}
    # JSON keeps the exact value (the characters are written as \u escapes)
    findings = json.loads(docs[report / "findings.json"])
    assert findings["incidents"][0]["user_agents"][0]["user_agent"] == HOSTILE_UA
    assert f"id{BIDI}" in findings["incidents"][0]["request_ids"]


def test_steps_sql_with_escaped_characters_still_reruns(outputs, tmp_path):
    case = tmp_path / "case.duckdb"
    shutil.copyfile(outputs / "case.duckdb", case)
    con = duckdb.connect(str(case))
    con.execute("SET TimeZone = 'UTC'")
    for chunk in re.split(r"^-- step: ", (outputs / "report" / "steps.sql").read_text(), flags=re.M):
        if chunk.strip():
            con.execute(chunk.split("\n", 1)[1].strip().removesuffix(";"))
    ids = {r for (r,) in con.execute("SELECT request_id FROM __f_incident_1").fetchall()}
    con.close()
    assert set(FORMULA_IDS[:-2]) | {f"id{BIDI}"} <= ids


# --- 7. a named case is opened read-only; a DuckDB file that is no case is refused ------------------------------------

@pytest.mark.slow
def test_a_case_on_read_only_media_is_read_and_left_untouched(tiny_case, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    case = media / "case.duckdb"
    shutil.move(tiny_case, case)
    before = sha256(case)
    case.chmod(0o444)
    media.chmod(0o555)
    commands = [["report", case, "--out", tmp_path / "report", "--no-detector"],
                ["detect", case, "--out", tmp_path / "scores.csv"],
                ["export", case, "--out", tmp_path / "bundle"]]
    # the three commands in one other process (one start-up), while this one holds the file open read-only:
    # read-only locks share, a read-write open would fail
    script = ("import json, sys\nfrom forensics import cli\n"
              "print(json.dumps([cli.main(args) for args in json.loads(sys.argv[1])]))")
    holder = duckdb.connect(str(case), read_only=True)
    try:
        r = subprocess.run([sys.executable, "-c", script, json.dumps([[str(a) for a in c] for c in commands])],
                           capture_output=True, text=True)
        assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1]) == [0, 0, 0], r.stdout + r.stderr
    finally:
        holder.close()
        media.chmod(0o755)
        case.chmod(0o644)
    assert sha256(case) == before
    assert sorted(p.name for p in media.iterdir()) == ["case.duckdb"]      # no WAL, no lock file left
    findings = json.loads((tmp_path / "report" / "findings.json").read_text())
    assert [(i["kind"], i["verdict"], i["requests"]) for i in findings["incidents"]] == [
        ("unauthenticated_proxy", "attack", 60)]
    assert subprocess_run("verify", tmp_path / "bundle").returncode == 0


def test_reconciliation_from_a_read_only_case_equals_pricing_into_the_case(tiny_case, tmp_path):
    """The usage models' prices go to a temp table now; the numbers are those of inserting them into the case."""
    from forensics import pricing
    from forensics.analysis import reconcile
    from forensics.api import Case

    writable = tmp_path / "writable.duckdb"
    shutil.copyfile(tiny_case, writable)
    with Case.open(writable) as case:                       # what the investigation used to do to the case
        keys = case.execute("""SELECT DISTINCT provider, model, CAST(bucket_start AS DATE) FROM provider_usage u
                               WHERE NOT EXISTS (SELECT 1 FROM prices p WHERE p.provider = u.provider
                                     AND p.model = u.model AND p.day = CAST(u.bucket_start AS DATE))""").fetchall()
        assert keys
        pricing.insert_prices(case.con, [pricing.resolve_price(p, m, d, {}, "") for p, m, d in keys])
        expected = reconcile.reconcile(case)
    with Case.open(tiny_case, read_only=True) as case:
        got = reconcile.reconcile(case)
        assert case.execute("SELECT count(*) FROM prices WHERE model = 'gpt-4-0613'").fetchone()[0] == 0
    assert [(r.provider, r.provider_cost_usd, r.proxy_cost_usd, r.unexplained_usd) for r in got] == \
        [(r.provider, r.provider_cost_usd, r.proxy_cost_usd, r.unexplained_usd) for r in expected]
    assert [[(k["api_key_id"], k["cost_usd"], k["tokens"], k["unpriced_buckets"]) for k in r.outside_proxy]
            for r in got] == [[(k["api_key_id"], k["cost_usd"], k["tokens"], k["unpriced_buckets"])
                               for k in r.outside_proxy] for r in expected]


@pytest.fixture
def plain_duckdb(tmp_path) -> Path:
    path = tmp_path / "notes.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE notes (id INTEGER, text VARCHAR)")
    con.execute("INSERT INTO notes VALUES (1, 'my own data')")
    con.close()
    return path


@pytest.mark.parametrize("command", ["report", "detect", "export", "merge", "ingest_into"])
def test_a_duckdb_file_that_is_no_case_is_refused_and_unchanged(plain_duckdb, tmp_path, capsys, command):
    before = sha256(plain_duckdb)
    log = tmp_path / "access.log"
    log.write_text('198.51.100.4 - - [16/Nov/2026:03:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "x"\n')
    args = {"report": ["report", plain_duckdb, "--out", tmp_path / "out"],
            "detect": ["detect", plain_duckdb, "--out", tmp_path / "scores.csv"],
            "export": ["export", plain_duckdb, "--out", tmp_path / "bundle"],
            "merge": ["ingest", plain_duckdb, "--case", tmp_path / "new.duckdb"],
            "ingest_into": ["ingest", log, "--case", plain_duckdb]}[command]
    code, _, err = main(capsys, *args)
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert str(plain_duckdb) in line and "not a forensics case" in line and "ingest_files" in line, line
    assert sha256(plain_duckdb) == before
    assert not (tmp_path / "scores.csv").exists() and not (tmp_path / "bundle").exists()


def test_a_file_that_is_no_duckdb_database_is_a_usage_error(tmp_path, capsys):
    fake = tmp_path / "fake.duckdb"
    fake.write_bytes(b"not a database at all\n" * 10)
    code, _, err = main(capsys, "report", fake, "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(fake) in err, err
    assert fake.read_bytes() == b"not a database at all\n" * 10


def test_the_case_carries_its_schema_version(tiny_case, tmp_path, capsys):
    from forensics.api import Case
    from forensics.schema import SCHEMA_VERSION

    with Case.open(tiny_case, read_only=True) as case:
        assert case.schema_version == SCHEMA_VERSION >= 2
    old = tmp_path / "old.duckdb"                            # a case made before case_meta: version 1, accepted
    shutil.copyfile(tiny_case, old)
    con = duckdb.connect(str(old))
    con.execute("DROP TABLE case_meta")
    con.close()
    with Case.open(old, read_only=True) as case:
        assert case.schema_version == 1
    future = tmp_path / "future.duckdb"
    shutil.copyfile(tiny_case, future)
    con = duckdb.connect(str(future))
    con.execute("UPDATE case_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    before = sha256(future)
    for args in (["report", future, "--out", tmp_path / "out"], ["ingest", future, "--case", tmp_path / "new.duckdb"]):
        code, _, err = main(capsys, *args)
        assert code == 2, err
        [line] = err.strip().splitlines()
        assert str(future) in line and "schema version 99" in line, line
    assert sha256(future) == before


@pytest.mark.parametrize("tamper", [
    "UPDATE ingest_files SET loaded = loaded + 1 WHERE format = 'litellm.payload_ndjson'",
    "DELETE FROM llm_requests WHERE request_id = 'chatcmpl-quiet0007'",
    "INSERT INTO quarantine SELECT file_id, 1, 'x', 'forged' FROM ingest_files WHERE format LIKE 'openai%'",
], ids=["records_not_loaded_plus_quarantined", "a_row_missing", "a_quarantine_row_too_many"])
def test_merge_refuses_a_case_whose_counts_do_not_add_up(tiny_case, tmp_path, capsys, tamper):
    con = duckdb.connect(str(tiny_case))
    con.execute(tamper)
    con.close()
    target = tmp_path / "target.duckdb"
    code, _, err = main(capsys, "ingest", tiny_case, "--case", target)
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert str(tiny_case) in line and "do not add up" in line, line
    con = duckdb.connect(str(target), read_only=True)
    assert con.execute("SELECT count(*) FROM ingest_files").fetchone()[0] == 0       # nothing merged
    con.close()


# --- outputs written atomically --------------------------------------------------------------------------------------

def test_a_report_that_fails_half_way_leaves_the_previous_one_whole(outputs, tiny_case, tmp_path, capsys,
                                                                    monkeypatch):
    from forensics.outputs import report

    out = tmp_path / "report"
    shutil.copytree(outputs / "report", out)
    before = tree(out)

    def broken(model):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "render_md", broken)
    code, _, err = main(capsys, "report", tiny_case, "--out", out, "--no-detector")
    assert code == 1 and "No space left on device" in err
    assert tree(out) == before                 # every old file as it was, no new one, no temp file


@pytest.mark.slow
def test_export_that_fails_half_way_leaves_no_bundle(tiny_case, tmp_path, capsys, monkeypatch):
    from forensics.outputs import bundle

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle, "letter", broken)
    for out in (tmp_path / "absent", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        code, _, err = main(capsys, "export", tiny_case, "--out", out)
        assert code == 1 and "No space left on device" in err
        assert not out.exists() or list(out.iterdir()) == [], sorted(out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "tiny.duckdb"]


def test_detect_that_fails_half_way_leaves_the_previous_scores(tiny_case, tmp_path, capsys, monkeypatch):
    from forensics.detect import run

    real = run.detect

    class Bomb:                                # a reason whose text cannot be written: the disk filled up here
        def __str__(self):
            raise OSError(28, "No space left on device")

    def detect(*args, **kwargs):
        scores, det, frame = real(*args, **kwargs)
        scores["reasons"] = scores["reasons"].astype(object)
        scores.loc[scores.index[len(scores) // 2], "reasons"] = Bomb()
        return scores, det, frame

    monkeypatch.setattr(run, "detect", detect)
    out = tmp_path / "scores.csv"
    out.write_text("request_id,score,flagged,reasons\nold,0.5,False,\n")
    code, _, err = main(capsys, "detect", tiny_case, "--out", out)
    assert code == 1 and "No space left on device" in err
    assert out.read_text() == "request_id,score,flagged,reasons\nold,0.5,False,\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv", "tiny.duckdb"]


def test_export_zip_of_the_current_folder_goes_beside_it(tiny_case, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "evidence"
    folder.mkdir()
    monkeypatch.chdir(folder)
    code, out, err = main(capsys, "export", tiny_case, "--out", ".", "--zip")
    assert code == 0, err
    target = tmp_path / "evidence.zip"
    assert f"wrote {target}" in out
    assert not any(p.suffix == ".zip" for p in folder.rglob("*"))
    with zipfile.ZipFile(target) as z:
        names = z.namelist()
    assert sorted(names) == sorted(f"evidence/{p.name}" for p in folder.iterdir())
    assert main(capsys, "verify", ".")[0] == 0


# --- verify ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def bundle_copy(outputs, tmp_path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(outputs / "bundle", out)
    assert cli.main(["verify", str(out)]) == 0
    return out


def test_verify_refuses_an_emptied_manifest_and_missing_bundle_files(bundle_copy, capsys):
    for p in bundle_copy.iterdir():
        if p.name != "MANIFEST.sha256":
            p.unlink()
    (bundle_copy / "MANIFEST.sha256").write_text("")
    code, _, err = main(capsys, "verify", bundle_copy)
    assert code == 1
    lines = err.strip().splitlines()
    assert any("MANIFEST.sha256: lists no file" in ln for ln in lines), lines
    for name in BUNDLE_ALWAYS:
        assert any(f"{name}: missing" in ln for ln in lines), (name, lines)


def test_verify_wants_the_files_every_bundle_has(bundle_copy, capsys):
    (bundle_copy / "request.md").unlink()
    manifest = bundle_copy / "MANIFEST.sha256"
    manifest.write_text("".join(ln + "\n" for ln in manifest.read_text().splitlines() if "request.md" not in ln))
    code, _, err = main(capsys, "verify", bundle_copy)
    assert code == 1
    [line] = err.strip().splitlines()
    assert "request.md: missing" in line


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_verify_refuses_symbolic_links(bundle_copy, tmp_path, capsys, kind):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if kind == "file":     # same bytes, so the manifest still matches: the link itself is the problem
        shutil.move(bundle_copy / "requests.csv", elsewhere / "requests.csv")
        (bundle_copy / "requests.csv").symlink_to(elsewhere / "requests.csv")
        name = "requests.csv"
    else:
        (elsewhere / "notes.txt").write_text("hidden behind a link\n")
        (bundle_copy / "more").symlink_to(elsewhere, target_is_directory=True)
        name = "more"
    code, _, err = main(capsys, "verify", bundle_copy)
    assert code == 1
    [line] = err.strip().splitlines()
    assert f"{name}: symbolic link" in line, line


# --- usage errors are exit 2 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--alerts-per-day", "nan"], "--alerts-per-day"),
    (["--alerts-per-day", "-1"], "--alerts-per-day"),
    (["--alerts-per-day", "inf"], "--alerts-per-day"),
    (["--train-start", "2026-11-18T00:00:00Z", "--train-end", "2026-11-17T00:00:00Z"], "--train-start"),
    (["--train-start", "2026-11-18T00:00:00Z", "--train-end", "2026-11-18T00:00:00Z"], "--train-start"),
], ids=["nan", "negative", "inf", "reversed_window", "empty_window"])
def test_detect_refuses_bad_options_as_usage_errors(tiny_case, tmp_path, capsys, args, words):
    code, _, err = main(capsys, "detect", tiny_case, "--out", tmp_path / "scores.csv", *args)
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert words in line
    assert not (tmp_path / "scores.csv").exists()


def test_case_that_is_a_folder_is_a_usage_error(tmp_path, capsys):
    log = tmp_path / "access.log"
    log.write_text('198.51.100.4 - - [16/Nov/2026:03:00:04 +0100] "GET / HTTP/1.1" 200 5 "-" "x"\n')
    folder = tmp_path / "cases"
    folder.mkdir()
    code, _, err = main(capsys, "ingest", log, "--case", folder)
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert str(folder) in line and "folder" in line
    assert list(folder.iterdir()) == []


# --- the text rules themselves ----------------------------------------------------------------------------------------

HIDDEN_SAMPLES = ["\u202e", "\u200b", "\u200f", "\u2028", "\u2029", "\u2066", "\u2069", "\u061c", "\ufeff", "\u00ad",
                  "\x1b", "\x00", "\n", "\r", "\t", "\x85", "\U000e0041"]


def test_printable_shows_every_hidden_character_and_keeps_the_rest():
    from forensics.outputs.safe import md, neutralise, printable

    for ch in HIDDEN_SAMPLES:
        shown = printable(f"a{ch}b")
        assert ch not in shown and shown.startswith("a\\") and shown.endswith("b"), repr(shown)
        assert ch not in md(f"a{ch}b") and ch not in neutralise(f"a{ch}b")
    assert printable("\u202e") == "\\u202e" and printable("\x1b") == "\\x1b"
    assert printable("\U000e0041") == "\\U000e0041"
    for text in ("café 東京 Ünïcödé ✓ 😀", "plain ascii ~!#$%^&*()"):
        assert printable(text) == text


def test_json_and_sql_literals_keep_the_exact_value_without_showing_it():
    from forensics.analysis.steps import literal
    from forensics.outputs.safe import json_text

    value = "id" + "".join(HIDDEN_SAMPLES) + "'quoted' 東京"
    text = json_text({"v": value, "list": [value]}, indent=2)
    assert not any(ch in text for ch in HIDDEN_SAMPLES if ch != "\n")
    assert json.loads(text) == {"v": value, "list": [value]}
    con = duckdb.connect()
    for v in (value, [value, None], "", "plain 'one'"):
        sql = literal(v)
        assert not any(ch in sql for ch in HIDDEN_SAMPLES), sql
        assert con.execute(f"SELECT {sql}").fetchone()[0] == v
    con.close()
