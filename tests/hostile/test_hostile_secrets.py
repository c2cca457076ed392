"""Safe to share, for real (issue #15): no full key, as written or escaped, in any byte the tool writes or prints.

Not only the case's tables: the case file's free blocks and its WAL (rows written before they were redacted), a
case killed mid-ingest, quarantine reasons, file names, the terminal, and every document `report`, `export` and
`detect` write. Keys are planted in every family, as written and percent-, nginx- or JSON-escaped.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from forensics.api import Case
from keyscan import leaked_keys, leaks_in_bytes, leaks_in_files, pct, uesc, xesc  # tests/hostile/keyscan.py

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
ROOT = HERE.parent.parent
KEYS = tomllib.loads((HERE / "cases.toml").read_text())["keys"]
OPENAI, ANTHROPIC, VIRTUAL, BEARER, SIMULATED, OPAQUE = (KEYS[k] for k in ("openai", "anthropic", "virtual",
                                                                             "bearer", "simulated", "opaque"))
PLANTED = sorted(KEYS.values())
# rows enough for DuckDB to write whole row groups (122,880 rows) into the file before the transaction commits:
# with fewer, nothing reaches the file before the rows are final
ROW_GROUP_LINES = 130_000
ROW_GROUP_BYTES = 4 << 20    # a case file holding a row group of these lines is bigger (the schema alone: 12 KiB)


def _env(tmp: Path) -> dict:
    """The environment of a child run: this tree first on the path, temporary files where the test can scan them."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "TMPDIR": str(tmp)}


def _main_line(i: int) -> str:
    """nginx `main` behind a balancer, a key in the query string (as written, %-escaped, \\x-escaped or its 'sk-'
    percent-encoded, a line in four each), the referer, the user agent and X-Forwarded-For."""
    k = (OPENAI, pct(OPENAI, "-"), xesc(OPENAI, "-"), pct(OPENAI[:3], lower=True) + OPENAI[3:])[i % 4]
    return (f'10.0.0.5 - - [17/Mar/2025:02:{i // 60 % 60:02d}:{i % 60:02d} +0000] "GET /v1/models?api_key={k}&i={i} '
            f'HTTP/1.1" 200 5 "https://app.example/?t={BEARER}" "curl/8 {ANTHROPIC}" '
            f'"{VIRTUAL}, 203.0.113.{i % 250}"\n')


def _write_main_log(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for lo in range(0, n, 10_000):
            f.write("".join(_main_line(i) for i in range(lo, min(lo + 10_000, n))))


@pytest.mark.slow
def test_no_key_bytes_in_any_file_a_big_nginx_ingest_wrote(tmp_path, monkeypatch):
    """Redacting rows after they were inserted left the keys in the case file's free blocks (2,086 copies after
    300 k lines): nothing unredacted may reach the case connection's tables at all."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    log = tmp_path / "access.log"
    _write_main_log(log, ROW_GROUP_LINES)
    (tmp_path / "case").mkdir()
    with Case.open(tmp_path / "case" / "case.duckdb") as case:
        (r,) = case.ingest([log])
        assert (r.format, r.records, r.loaded) == ("nginx.main", ROW_GROUP_LINES, ROW_GROUP_LINES)
        in_columns = leaked_keys(case.con, PLANTED)
        # the walk out of X-Forwarded-For still finds the client behind the key-holding hop
        assert case.execute("SELECT count(*) FROM http_requests WHERE client_ip LIKE '203.0.113.%'").fetchone()[0] \
            == ROW_GROUP_LINES
    in_files = leaks_in_files(tmp_path / "case", PLANTED) + leaks_in_files(tmp_path / "tmp", PLANTED)
    assert not in_columns and not in_files, (in_columns, in_files)


def test_no_key_bytes_in_any_file_a_litellm_ingest_wrote(tmp_path, monkeypatch):
    """A payload with the key in metadata (user_api_key), a logged Authorization header and x-api-key, the user
    agent and the prompt: the case holds hash and hint, and its files hold no key bytes."""
    from make_cases import payload

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = tmp_path / "payload.ndjson"
    with open(path, "w") as f:
        for i in range(3000):
            p = payload(i)
            p["metadata"] |= {"user_api_key_hash": None, "user_api_key": VIRTUAL, "user_agent": f"app/1 {OPENAI}",
                              "requester_custom_headers": {"authorization": f"Bearer {OPAQUE}",
                                                           "x-api-key": pct(ANTHROPIC, "-")}}
            p["messages"] = [{"role": "user", "content": f"my key is {OPENAI}"}]
            p["end_user"] = xesc(OPENAI, "-")
            f.write(json.dumps(p) + "\n")
    (tmp_path / "case").mkdir()
    with Case.open(tmp_path / "case" / "case.duckdb") as case:
        (r,) = case.ingest([path])
        assert (r.records, r.loaded) == (3000, 3000)
        assert case.execute("SELECT DISTINCT key_hint FROM llm_requests").fetchall() == [("sk-...7hJk",)]
        in_columns = leaked_keys(case.con, PLANTED)
    in_files = leaks_in_files(tmp_path / "case", PLANTED) + leaks_in_files(tmp_path / "tmp", PLANTED)
    assert not in_columns and not in_files, (in_columns, in_files)


# the ingest of argv[2] into the case argv[1], killed (-9) just before the file's COMMIT: every row of the file has
# been written by then (DuckDB writes whole row groups into the case file before the commit), none committed
_KILLED_INGEST = """
import os, signal, sys
from forensics.api import Case
from forensics.ingest import ingest_paths


class KilledAtCommit:
    def __init__(self, con):
        self._con = con

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, *args):
        if sql.strip().upper() == "COMMIT":
            sys.stdout.write("killed\\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return self._con.execute(sql, *args)


with Case.open(sys.argv[1]) as case:
    ingest_paths(KilledAtCommit(case.con), [sys.argv[2]])
"""


@pytest.mark.slow
def test_kill_9_mid_ingest_leaves_no_key_bytes(tmp_path):
    """An ingest killed (-9) after DuckDB wrote the file's rows into the case file, before they were committed:
    whatever reached the case file, its WAL or the temporary folder is already redacted."""
    log = tmp_path / "access.log"
    _write_main_log(log, 2 * ROW_GROUP_LINES)
    folder = tmp_path / "case"
    folder.mkdir()
    db = folder / "case.duckdb"
    child = subprocess.run([sys.executable, "-c", _KILLED_INGEST, str(db), str(log)], cwd=ROOT,
                           env=_env(tmp_path / "tmp"), capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL and child.stdout.endswith("killed\n"), child.stderr[-2000:]
    assert db.stat().st_size > ROW_GROUP_BYTES          # the file holds the rows written before the kill
    assert leaks_in_files(folder, PLANTED) + leaks_in_files(tmp_path / "tmp", PLANTED) == []


@pytest.mark.slow
def test_a_key_in_a_file_name_is_redacted_in_the_case_and_on_the_terminal(tmp_path):
    """ingest_files.path keeps the redacted form of a path holding a key; the terminal shows that form too."""
    folder = tmp_path / f"logs-{VIRTUAL}"
    folder.mkdir()
    shutil.copy(CASES / "nginx_keys_in_numbers.log", folder / f"access-{OPENAI}.log")
    shutil.copy(CASES / "litellm_object_wrong_shape.json", folder / f"{pct(ANTHROPIC, '-')}.json")
    (tmp_path / "case").mkdir()
    db = tmp_path / "case" / "case.duckdb"
    printed = []
    for extra in ([], ["--json"]):
        proc = subprocess.run([sys.executable, "-m", "forensics", "ingest", str(folder), "--case", str(db), *extra],
                              capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path / "tmp"))
        assert proc.returncode == 1, proc.stderr                      # the unrecognised file
        printed.append(proc.stdout + proc.stderr)
    with Case.open(db, read_only=True) as case:
        paths = [p for (p,) in case.execute("SELECT path FROM ingest_files ORDER BY file_id").fetchall()]
        in_columns = leaked_keys(case.con, PLANTED)
    leaks = (in_columns, leaks_in_bytes("".join(printed).encode(), PLANTED), leaks_in_files(tmp_path / "case", PLANTED))
    assert leaks == ([], [], []), leaks
    assert len(paths) == 2 and all("logs-[redacted key sk-...7hJk sha256:" in p for p in paths), paths
    assert all("access-[redacted key sk-...4Io6 sha256:" in text for text in printed)


# ---- every output byte -------------------------------------------------------------------------------------------

def _plant(folder: Path) -> None:
    """Keys in every family and every way: the corpus files that hold keys, under names that hold keys too, plus
    X-Forwarded-For chains and escaped keys in a LiteLLM payload."""
    from make_cases import main_fmt, nd, payload

    for name, family in (("nginx_authorization_logged.log", "nginx"), ("nginx_keys_in_numbers.log", "nginx"),
                         ("nginx_keys_encoded.log", "nginx"), ("nginx_json_keys_in_numbers.log", "nginx"),
                         ("nginx_json_authorization.log", "nginx"), ("payload_keys_everywhere.ndjson", "litellm"),
                         ("spendlogs_injection_and_keys.csv", "litellm"), ("flat_spend_wrong_types.ndjson", "litellm"),
                         ("openai_costs_wrong_types.json", "openai"), ("anthropic_usage_wrong_types.json", "anthropic"),
                         ("unrecognised_keys_encoded.txt", "other")):
        (folder / family).mkdir(parents=True, exist_ok=True)
        shutil.copy(CASES / name, folder / family / name)
    # a key in the file's name, and in X-Forwarded-For chains
    (folder / "nginx" / f"access-{OPENAI}.log").write_text("".join(line + "\n" for line in (
        main_fmt(f"{OPENAI}, 203.0.113.5"), main_fmt(f"203.0.113.6, {pct(ANTHROPIC, '-')}"),
        main_fmt(f"{xesc(VIRTUAL, lower=True)}"), main_fmt("203.0.113.7", peer=SIMULATED),
        main_fmt("203.0.113.8", ua=f"Bearer {OPAQUE}", ref=f"https://x.example/#{BEARER}"),
    )))
    (folder / "litellm" / "payload-escaped.ndjson").write_text(nd(
        payload(11, metadata={**payload(11)["metadata"], "user_api_key": pct(VIRTUAL, "-"),
                              "user_agent": f"app {xesc(OPENAI, '-')}", "requester_ip_address": OPENAI}),
        payload(12, end_user=pct(ANTHROPIC, lower=True), request_tags=[f"User-Agent: x {BEARER}"],
                requester_ip_address=f"{VIRTUAL}, 203.0.113.10"),
    ).replace(BEARER, uesc(BEARER, ".")))             # JSON's own escape, decoded by the JSON reader


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "forensics", *args], capture_output=True, text=True, cwd=ROOT,
                          env=_env(tmp))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.slow
def test_every_output_byte_is_free_of_planted_keys(tmp_path):
    """The sample incident plus keys planted in every family and every way (as written, %-, \\x- and \\u-escaped,
    in numbers, times, addresses, X-Forwarded-For, headers, metadata, file and folder names): ingest, report,
    export (with --zip) and detect, then every byte written or printed is searched for every form of every key."""
    from forensics.simulate import secret_keys

    keys = sorted(set(PLANTED) | set(secret_keys("open_proxy", 1).values()))
    planted = tmp_path / f"planted-{VIRTUAL}"
    _plant(planted)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    db = out / "case.duckdb"
    printed = []
    ingest = _run(["ingest", str(ROOT / "sample_logs"), str(planted), "--case", str(db), "--json"], tmp)
    assert ingest.returncode == 1, ingest.stderr           # the unrecognised file
    printed.append(ingest)
    report = _run(["report", str(db), "--out", str(out / "report")], tmp)
    assert report.returncode == 0, report.stderr
    printed.append(report)
    # a case and a folder of logs (already in it): the export builds its own case, merging and skipping
    export = _run(["export", str(db), str(planted), "--out", str(out / "bundle"), "--zip"], tmp)
    assert export.returncode == 1, export.stderr
    printed.append(export)
    detect = _run(["detect", str(db), "--out", str(out / "scores.csv")], tmp)
    assert detect.returncode == 0, detect.stderr
    printed.append(detect)

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    for expected in ("case.duckdb", "report/findings.json", "report/report.html", "report/report.md",
                     "report/steps.sql", "bundle/chain_of_custody.json", "bundle/MANIFEST.sha256", "bundle.zip",
                     "scores.csv"):
        assert expected in written, written
    assert any(w.startswith("report/figures/") and w.endswith(".png") for w in written), written
    with Case.open(db, read_only=True) as case:
        in_columns = leaked_keys(case.con, keys)
        # the planted files are in the case (some quarantined), and their names are there, redacted
        (n,) = case.execute("SELECT count(*) FROM ingest_files "
                            "WHERE contains(path, 'planted-[redacted key ')").fetchone()
        (q,) = case.execute("SELECT count(*) FROM quarantine").fetchone()
    in_files = leaks_in_files(out, keys) + leaks_in_files(tmp, keys)
    on_terminal = [(p.args[3], leaks_in_bytes((p.stdout + p.stderr).encode(), keys)) for p in printed]
    leaks = (in_columns, in_files, [t for t in on_terminal if t[1]])
    assert leaks == ([], [], []), leaks
    assert n == 13 and q > 10, (n, q)
    # what the documents say instead: the hash and hint of the key in the file's name
    findings = json.loads((out / "report" / "findings.json").read_text())
    assert any("access-[redacted key sk-...4Io6 sha256:" in i["path"] for i in findings["inputs"])
    custody = json.loads((out / "bundle" / "chain_of_custody.json").read_text())
    assert any("planted-[redacted key sk-...7hJk sha256:" in a for a in custody["command_line"])
