"""Whole files into the quarantine table, line by line: what a file nobody can read becomes, so nothing is lost."""
from __future__ import annotations

from forensics.duck import query_with
from forensics.secrets import redact_columns
from forensics.sources.interface import LoadContext, LoadResult
from forensics.sources.lines import iter_line_batches

UNRECOGNISED_MAX_LINE = 1 << 20      # a line of an unknown file is kept to 64 KiB anyway: longer ones are not held


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
        # keys are redacted before the raw text is cut, so that no part of a key survives the cut
        query_with(ctx.con, "_unrec_batch", batch,
                   f"CREATE OR REPLACE TEMP TABLE _unrec AS SELECT line_no, line AS raw, {reason} AS reason "
                   "FROM _unrec_batch")
        redact_columns(ctx.con, "_unrec", ["raw"])
        ctx.con.execute("INSERT INTO quarantine SELECT ?, line_no, left(raw, 65536), reason FROM _unrec", [ctx.file_id])
        ctx.con.execute("DROP TABLE _unrec")
        n += batch.num_rows
    notes = [f"{reader.empty_lines:,} blank lines skipped"] if reader.empty_lines else []
    if reader.error:                     # the unreadable rest of a cut gzip file is one record
        ctx.con.execute("INSERT INTO quarantine VALUES (?, ?, '', ?)", [ctx.file_id, reader.lines + 1, reader.error])
        n += 1
        notes.append(reader.error)
    return LoadResult(records=n, loaded=0, quarantined=n, notes=tuple(notes))
