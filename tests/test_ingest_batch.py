"""Many small files load in batches (forensics.ingest_batch) with exactly the accounting and rows the per-file path
gives; files the batch does not read the same way (gzip, CRLF, grown, broken) go through the per-file path."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from forensics import case, ingest_batch
from forensics.ingest import ingest_file, ingest_paths
from forensics.sources.nginx.nginx_formats import COMBINED

ASSETS = Path(__file__).resolve().parent / "assets"
# LiteLLM's S3 logger: one StandardLoggingPayload per object, `{date}/time-..._{id}.json` (tests/assets/litellm)
S3_OBJECT = ASSETS / "litellm" / "time-2025-06-22T18-03-20-123456_chatcmpl-s3-object-0001.json"
GCS_ROW = ASSETS / "litellm" / "gcs_spendlogs_row.json"
# combined-format lines as tests/assets/nginx/combined.log holds them, one per file
LINE = '203.0.113.{n} - - [30/Mar/2025:01:59:{n:02d} +0100] "POST /v1/chat/completions HTTP/1.1" 200 1534 "-" "OpenAI/Python 1.51.0"\n'
N = 2                                # files of each kind: a batch from 2 files on (MIN_FILES, set in `tree`)
GCS_IDS = [2, 0]                     # the S3 objects are chatcmpl-0 and chatcmpl-1: one request in both


def _tree(root: Path) -> Path:
    doc = json.loads(S3_OBJECT.read_text())
    day = root / "s3" / "2025-06-22"
    day.mkdir(parents=True)
    for i in range(N):
        (day / f"time-2025-06-22T18-03-{i:02d}-000000_chatcmpl-{i}.json").write_text(
            json.dumps(dict(doc, id=f"chatcmpl-{i}", litellm_call_id=f"call-{i}", startTime=1750615400.0 + i,
                            endTime=1750615401.0 + i), indent=2))
    row = json.loads(GCS_ROW.read_text())
    (root / "gcs").mkdir()
    for i in range(N):      # SpendLogs rows; four the same requests as S3 objects (merged, not doubled)
        (root / "gcs" / f"row-{i}.json").write_text(json.dumps(dict(row, request_id=f"chatcmpl-{GCS_IDS[i]}")))
    (root / "gcs" / "broken.json").write_text('{"request_id": "x", "startTime": "2024-08-01T14:27:12", "spend": 1,')
    nginx = root / "nginx"
    nginx.mkdir()
    for i in range(N):
        (nginx / f"access-{i}.log").write_text(LINE.format(n=i + 1) + ("\n" if i == 1 else ""))
    (nginx / "bad-status.log").write_text(LINE.format(n=40).replace(" 200 ", " abc "))
    (nginx / "crlf.log").write_text(LINE.format(n=41).replace("\n", "\r\n"))
    (nginx / "same-as-0.log").write_text(LINE.format(n=1))
    (nginx / "grown-from-1.log").write_text((nginx / "access-1.log").read_text() + LINE.format(n=42))
    (nginx / "zipped.log.gz").write_bytes(gzip.compress(LINE.format(n=43).encode()))
    return root


def _state(con) -> tuple:
    """What the case holds, file ids aside: per file its report, its rows and its quarantine, by path."""
    files = con.execute("SELECT path, sha256, format, records, loaded, quarantined, merged, status, message "
                        "FROM ingest_files ORDER BY path").fetchall()
    http = con.execute("SELECT f.path, h.* EXCLUDE (file_id) FROM http_requests h JOIN ingest_files f USING (file_id) "
                       "ORDER BY ALL").fetchall()
    llm = con.execute("SELECT f.path, r.* EXCLUDE (file_id) FROM llm_requests r JOIN ingest_files f USING (file_id) "
                      "ORDER BY ALL").fetchall()
    quarantine = con.execute("SELECT f.path, q.record_no, q.raw, q.reason FROM quarantine q JOIN ingest_files f "
                             "USING (file_id) ORDER BY ALL").fetchall()
    return files, http, llm, quarantine


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_batch, "MIN_FILES", 2)      # a few files make a batch: the test stays fast
    return _tree(tmp_path / "logs")


def test_batched_ingest_holds_what_one_file_at_a_time_holds(tree, tmp_path):
    files = ingest_batch_files = sorted(p for p in tree.rglob("*") if p.is_file())
    batched = case.connect(tmp_path / "batched.duckdb")
    done, rest = ingest_batch.ingest_small(batched, files, None)
    # the odd files are left to the per-file path: CRLF, grown, gzip, the broken object, a line of no format
    assert sorted(files[i].name for i in rest) == ["bad-status.log", "broken.json", "crlf.log", "grown-from-1.log",
                                                   "zipped.log.gz"]
    assert files[[p.name for p in files].index("same-as-0.log")] and all(
        r.skipped == (files[i].name == "same-as-0.log") for i, r in done.items())
    for i in rest:
        done[i] = ingest_file(batched, files[i], str(files[i]))
    one_by_one = case.connect(tmp_path / "one.duckdb")
    alone = [ingest_file(one_by_one, p, str(p)) for p in ingest_batch_files]
    key = lambda r: (r.path, r.sha256, r.format, r.records, r.loaded, r.quarantined, r.merged, r.skipped)  # noqa: E731
    assert [key(done[i]) for i in range(len(files))] == [key(r) for r in alone]
    a, b = _state(batched), _state(one_by_one)
    assert a[0] == b[0] and a[1] == b[1] and a[3] == b[3]
    # a request in two files keeps one row (which file made it depends on the order files were loaded in)
    assert sorted(r[1:] for r in a[2]) == sorted(r[1:] for r in b[2])
    assert batched.execute("SELECT count(*) FROM llm_requests").fetchone()[0] == len(set(range(N)) | set(GCS_IDS)) == 3
    by_path = {r.path: r for r in alone}
    assert by_path[str(tree / "nginx" / "access-1.log")].message == "1 blank lines skipped (not records)"
    assert by_path[str(tree / "nginx" / "bad-status.log")].quarantined == 1
    # gcs/ comes before s3/: the S3 object of chatcmpl-0 merges into the row gcs/row-1.json made
    assert [r.merged for r in alone if r.format == "litellm.payload_object"] == [1, 0]
    batched.close()
    one_by_one.close()


def test_ingest_paths_batches_and_again_doubles_nothing(tree, tmp_path):
    con = case.connect(tmp_path / "c.duckdb")
    lines: list[str] = []
    first = ingest_paths(con, [tree], status=lines.append)
    assert [r.status for r in first].count("loaded") == len(first) - 1          # same-as-0.log: skipped
    assert all(r.records == r.loaded + r.quarantined for r in first)
    counts = con.execute("SELECT (SELECT count(*) FROM http_requests), (SELECT count(*) FROM llm_requests), "
                         "(SELECT count(*) FROM quarantine), (SELECT count(*) FROM ingest_files)").fetchone()
    again = ingest_paths(con, [tree])
    # a file of no known format is tried again (a --nginx-format may since have been given), the others skipped
    assert [r.path for r in again if not r.skipped] == [str(tree / "nginx" / "bad-status.log")]
    assert con.execute("SELECT (SELECT count(*) FROM http_requests), (SELECT count(*) FROM llm_requests), "
                       "(SELECT count(*) FROM quarantine), (SELECT count(*) FROM ingest_files)").fetchone() == counts
    # the grown file loaded only its new line, after the file it extends
    grown = next(r for r in first if r.path.endswith("grown-from-1.log"))
    assert (grown.records, grown.loaded) == (1, 1) and "extends" in grown.message
    con.close()


def test_progress_lines_say_files_and_records():
    lines: list[str] = []
    p = ingest_batch.Progress(10, lines.append, every=0)
    p.add(4, 120)
    p.add(6, 30)               # the run is over: no line for the last step
    assert lines == ["ingest: 4 of 10 files, 120 records" + lines[0][len("ingest: 4 of 10 files, 120 records"):]]
    assert "files/s" in lines[0]


@pytest.mark.parametrize("name", ["inferred", "conf"])
def test_inferred_and_nginx_conf_formats_load_in_batches_as_one_by_one(name, tmp_path, monkeypatch):
    """One-line files of formats no built-in takes: inferred (each file from its own line: timed.log's lines give
    several formats, iso8601.log's $time_iso8601 lines others) or read from nginx.conf (conf/ declares `timed`)."""
    from forensics.sources.interface import LoadOptions

    monkeypatch.setattr(ingest_batch, "MIN_FILES", 2)
    nginx = ASSETS / "nginx"
    timed = (nginx / "timed.log").read_text().splitlines(keepends=True)
    iso = [ln for ln in (nginx / "iso8601.log").read_text().splitlines(keepends=True) if "T02:00" in ln]
    lines = {"timed": [timed[k] for k in (0, 1, 2, 4)], "iso": iso[:3]}
    folder = tmp_path / name
    folder.mkdir()
    for kind, kept in lines.items():
        for i, line in enumerate(kept):
            (folder / f"{kind}-{i}.log").write_text(line + ("\n" if i == 0 else ""))    # one with a blank line
    options = LoadOptions(nginx_conf=(str(nginx / "conf" / "nginx.conf"),)) if name == "conf" else None
    files = sorted(folder.iterdir())
    batched = case.connect(tmp_path / "batched.duckdb")
    done, rest = ingest_batch.ingest_small(batched, files, options)
    for i in rest:
        done[i] = ingest_file(batched, files[i], str(files[i]), options)
    one_by_one = case.connect(tmp_path / "one.duckdb")
    alone = [ingest_file(one_by_one, p, str(p), options) for p in files]
    key = lambda r: (r.path, r.sha256, r.format, r.records, r.loaded, r.quarantined, r.merged, r.message)  # noqa: E731
    assert [key(done[i]) for i in range(len(files))] == [key(r) for r in alone]
    a, b = _state(batched), _state(one_by_one)
    assert a[0] == b[0] and a[1] == b[1] and a[3] == b[3]
    assert all(r.records == r.loaded + r.quarantined for r in alone)
    assert len(a[1]) == 7 and all(r[1] is not None for r in a[1])           # every line loaded, its time read
    formats = {Path(r.path).name: r.format for r in alone}
    iso_format = COMBINED.replace("[$time_local]", "[$time_iso8601]") + " $request_time $upstream_response_time"
    # the batches took the groups of 2 files or more; a format only one file has went alone (a line alone gives
    # its own format: with "-" where the others have an upstream time, timed-2 and iso-1 are formats of their own)
    if name == "inferred":
        assert set(formats.values()) == {"nginx.inferred"}
        assert sorted(files[i].name for i in rest) == ["iso-1.log", "timed-2.log"]
        assert done[files.index(folder / "iso-0.log")].message == (
            f"log_format inferred from the lines: '{iso_format}'; 1 blank lines skipped (not records)")
    else:
        # every timed line is nginx.conf's `timed`, one batch; conf/ has no $time_iso8601 format: inferred
        assert {f for n, f in formats.items() if n.startswith("timed")} == {"nginx.conf.timed"}
        assert {f for n, f in formats.items() if n.startswith("iso")} == {"nginx.inferred"}
        assert sorted(files[i].name for i in rest) == ["iso-1.log"]
        message = done[files.index(folder / "timed-0.log")].message
        assert message.startswith("log_format timed of ") and "nginx.conf line 30" in message
        assert message.endswith("; 1 blank lines skipped (not records)")
    batched.close()
    one_by_one.close()
