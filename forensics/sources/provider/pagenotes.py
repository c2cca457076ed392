"""Provider pages that said "more pages exist" when they were loaded, checked again once every file is in.

A page's note is written when the page is loaded; in one `ingest` run its continuation may simply come later in
the file order (page1 before page2). After the run, a file's cursor notes are dropped when another file of the case
holds the bucket right after this file's last one, at the same width, for the same provider: the next page is there.
The notes that remain name pages that really are missing.
"""
from __future__ import annotations

import re

import duckdb

from forensics.sources.provider.provider_stage import CURSOR_NOTE

CURSOR_PREFIX = CURSOR_NOTE.split("{}")[0]
SEPARATOR = "; "
# one whole cursor note (its own text holds the separator), and the separator joining it to the others
_NOTE = re.compile("(?:" + re.escape(SEPARATOR) + ")?" + re.escape(CURSOR_NOTE).replace(r"\{\}", r"\S+?")
                   .replace(re.escape("{}"), r"\S+?"))


def refresh(con: duckdb.DuckDBPyConnection) -> dict[int, str | None]:
    """Drop cursor notes whose next page is now in the case; returns {file_id: new message} for files changed."""
    rows = con.execute(f"""
        WITH noted AS (
            SELECT file_id FROM ingest_files WHERE status = 'loaded' AND message LIKE '%{CURSOR_PREFIX}%'
        ), buckets AS (
            SELECT file_id, provider, bucket_start, bucket_end FROM provider_usage SEMI JOIN noted USING (file_id)
            UNION ALL
            SELECT file_id, provider, bucket_start, bucket_end FROM provider_costs SEMI JOIN noted USING (file_id)
        ), last AS (
            SELECT file_id, provider, max(bucket_end) AS last_end,
                   arg_max(bucket_end - bucket_start, bucket_end) AS width
            FROM buckets GROUP BY ALL
        ), continued AS (
            SELECT l.file_id FROM last l
            WHERE EXISTS (SELECT 1 FROM provider_usage u WHERE u.provider = l.provider AND u.file_id <> l.file_id
                            AND u.bucket_start = l.last_end AND u.bucket_end - u.bucket_start = l.width)
               OR EXISTS (SELECT 1 FROM provider_costs c WHERE c.provider = l.provider AND c.file_id <> l.file_id
                            AND c.bucket_start = l.last_end AND c.bucket_end - c.bucket_start = l.width)
            GROUP BY l.file_id HAVING count(*) = (SELECT count(*) FROM last x WHERE x.file_id = l.file_id)
        )
        SELECT f.file_id, f.message FROM ingest_files f SEMI JOIN continued USING (file_id) ORDER BY f.file_id
    """).fetchall()
    changed = {}
    for file_id, message in rows:
        kept = _NOTE.sub("", message).removeprefix(SEPARATOR)
        changed[file_id] = kept or None
    for file_id, message in changed.items():
        con.execute("UPDATE ingest_files SET message = ? WHERE file_id = ?", [message, file_id])
    return changed


def apply(con: duckdb.DuckDBPyConnection, reports) -> None:
    """refresh() and the same change on this run's file reports (matched by sha256), so what is printed agrees."""
    changed = refresh(con)
    if not changed:
        return
    by_sha = dict(con.execute("SELECT sha256, file_id FROM ingest_files WHERE status = 'loaded'").fetchall())
    for r in reports:
        fid = by_sha.get(r.sha256)
        if fid in changed and not r.skipped:
            r.message = changed[fid]
