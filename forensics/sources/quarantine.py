"""The quarantine table: how every family's records that cannot be loaded reach it, and whole unreadable files.

`insert_sql` is the one way in: raw text and reason are redacted there (forensics.secrets: a reason quotes the value
it could not read, and that value may be a key), in the statement that stores them, never after.
"""
from __future__ import annotations

from forensics.duck import query_with
from forensics.secrets import redact_sql
from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.lines import iter_line_batches

RAW_LIMIT = 65536                    # the raw text of a record is kept to 64 KiB
UNRECOGNISED_MAX_LINE = 1 << 20      # a line of an unknown file is kept to 64 KiB anyway: longer ones are not held


def insert_sql(file_id: int, source: str) -> str:
    """INSERT the rows of `source` (record_no, raw, reason) into quarantine: keys redacted before the raw text is
    cut, so that no part of a key survives the cut."""
    return (f"INSERT INTO quarantine (file_id, record_no, raw, reason) SELECT {int(file_id)}, record_no, "
            f"left({redact_sql('raw')}, {RAW_LIMIT}), {redact_sql('reason')} FROM {source}")


def quarantine_lines(ctx: LoadContext, why: str) -> LoadResult:
    """Every line of the file into the quarantine table with reason `why` (keys redacted, each cut to 64 KiB)."""
    n = 0
    why_sql = "'" + why.replace("'", "''") + "'"
    reader = iter_line_batches(ctx.path, max_line_bytes=UNRECOGNISED_MAX_LINE, skip_empty=True, spec=ctx.read)
    for batch in reader:
        lo, hi = batch.column("line_no")[0].as_py(), batch.column("line_no")[-1].as_py()
        reason = why_sql
        for no in reader.oversized_in(lo, hi):
            reason = f"CASE WHEN line_no = {no} THEN {why_sql} || '; {reader.oversized_reason(no)}' ELSE {reason} END"
        query_with(ctx.con, "_unrec_batch", batch, insert_sql(
            ctx.file_id, f"(SELECT line_no AS record_no, line AS raw, {reason} AS reason FROM _unrec_batch)"))
        n += batch.num_rows
    notes = [f"{reader.empty_lines:,} blank lines skipped"] if reader.empty_lines else []
    if reader.error:                     # the unreadable rest of a cut gzip file is one record
        ctx.con.execute("INSERT INTO quarantine VALUES (?, ?, '', ?)", [ctx.file_id, reader.lines + 1, reader.error])
        n += 1
        notes.append(reader.error)
    return LoadResult(records=n, loaded=0, quarantined=n, notes=tuple(notes))
