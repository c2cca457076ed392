"""nginx access logs (combined, main, timings, ingress, JSON, custom log_format) into the http_requests table.

Each batch of lines is parsed and inserted by one SQL statement per format variant (see nginx_formats); the few
lines no variant takes go through a Python regex that also accepts Apache-style \\" escapes, and what still fails is
quarantined with a reason. Empty lines are not records: they are counted in the notes only.
Stored values: request_raw and time_raw are kept as logged; in the other text fields nginx's \\x22 and \\x5C are
turned back into the quote and backslash the client sent (other \\xHH escapes stay as written, since the bytes
they stand for need not be text). Keys are redacted in the statements that store the rows, in a batch the line
reader flagged (forensics.secrets): no unredacted value is ever written to the case, nor kept in a temp table.
"""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from forensics.duck import query_with
from forensics.netaddr import TrustedProxies, walk_pairs
from forensics.sources.interface import LoadContext, LoadOptions, LoadResult
from forensics.sources.lines import LAST_LINE_CUT, MAY_HOLD_SECRET, batch_flag, iter_line_batches
from forensics.sources.nginx import nginx_json
from forensics.sources.nginx.nginx_detect import (JsonParser, TextParser, conf_parser, custom_parser, detect, explain,
                                                  log_conf_of)
from forensics.sources.nginx.nginx_formats import BUILTIN_FORMATS, STAGING_FIELDS, builtin, with_fallbacks
from forensics.sources.nginx.nginx_infer import infer, inference_sample
from forensics.sources.nginx.nginx_sql import INSERT_COLUMNS, convert_sql
from forensics.sources.quarantine import insert_sql as quarantine_sql

JSON_FORMATS = ("nginx.json", "nginx.json_default")
# nginx's own header buffers keep a real access-log line far shorter; a longer one is quarantined, cut
MAX_LINE_BYTES = 1 << 20
# about half a million combined-format lines. Ingest of 10 M lines: the same CPU time (27-28 s) with 32, 64 and
# 128 MiB, peak RSS 0.56, 0.71-0.73 and 0.98-1.00 GB (the batch's text, its parsed columns and DuckDB's insert at
# once); the whole report was no faster with 32 than with 64 (bench/bench_scale.py), whose row groups are fuller
BATCH_BYTES = 64 << 20
_ERROR_LOG = re.compile(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} \[(?:emerg|alert|crit|error|warn|notice|info|debug)\]")
_SYSLOG = re.compile(r"^(?:[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}T\S+) \S+ [\w./-]+(?:\[\d+\])?: ")


class NginxSource:
    family = "nginx"

    def detect(self, sample: bytes, path: Path, options: LoadOptions | None = None) -> str | None:
        """A format id when most sample lines are nginx access-log records of one format (nginx_detect)."""
        return detect(sample, path, options)

    def explain(self, sample: bytes, path: Path, options: LoadOptions | None = None) -> str | None:
        """For a file no source recognised: the closest nginx format, where it first fails, how to pass one."""
        return explain(sample, path, options)

    def load(self, ctx: LoadContext, fmt: str) -> LoadResult:
        # rows carry their line numbers, so the table need not keep insertion order: appends run in parallel
        (before,) = ctx.con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()
        ctx.con.execute("SET preserve_insertion_order = false")
        try:
            return _Load(ctx, fmt).run()
        finally:
            ctx.con.execute(f"SET preserve_insertion_order = {bool(before)}")


SOURCE = NginxSource()


# a row whose client the SQL could not settle, that has a peer or an X-Forwarded-For to walk
UNSETTLED = "client_ip IS NULL AND (forwarded_for IS NOT NULL OR remote_addr IS NOT NULL)"


class _Load:
    """One file: batches through the SQL variants, leftovers through the slow path, then client IPs and secrets."""

    def __init__(self, ctx: LoadContext, fmt: str):
        self.ctx, self.con, self.fmt, self.fid = ctx, ctx.con, fmt, int(ctx.file_id)
        self.notes: list[str] = []
        self.parser = None if fmt in JSON_FORMATS else self._text_parser()
        self.records = self.loaded = self.quarantined = self.empty = 0
        self.redact = False                        # the batch may hold a key: redact what is stored from it
        self.tmp = 0
        self.walked = 0                            # pairs in _nginx_ip_map the walk gave a client for
        self.scans: dict[str, pa.Table] = {}     # arrow data visible to _run's statements by name (never registered)
        self.json_objects: list[dict] | None = None    # the sample a JSON format was inferred from (not a template)

    def _text_parser(self):
        if self.fmt == "nginx.custom":
            if not self.ctx.options.nginx_format:
                raise ValueError("nginx.custom needs the log_format string (option nginx_format)")
            return custom_parser(self.ctx.options.nginx_format)
        if self.fmt.startswith("nginx.conf."):
            conf = log_conf_of(self.ctx.options)
            f = conf.by_id(self.fmt) if conf else None
            if f is None:
                raise ValueError(f"{self.fmt} needs the nginx configuration that defines it (option nginx_conf)")
            self.notes.append(f"log_format {f.name} of {f.where}")
            return conf_parser(f)
        if self.fmt == "nginx.inferred":
            return None                            # from the first batch's lines (see _inferred_parser)
        if self.fmt not in BUILTIN_FORMATS:
            raise ValueError(f"unknown nginx format {self.fmt!r}")
        return TextParser(builtin(self.fmt))

    def run(self) -> LoadResult:
        self.trusted = TrustedProxies(tuple(self.ctx.options.trusted_proxies))
        self.con.execute("CREATE OR REPLACE TEMP TABLE _nginx_ip_map (chain VARCHAR, peer VARCHAR, client_ip VARCHAR)")
        reader = self.reader = iter_line_batches(self.ctx.path, BATCH_BYTES, MAX_LINE_BYTES, flag_secrets=True,
                                                 skip_empty=True, spec=self.ctx.read)
        self.last_line_cut = None
        for batch in reader:
            if batch_flag(batch, LAST_LINE_CUT):
                self.last_line_cut = batch.column("line_no")[-1].as_py()
            if self.parser is None:
                self.parser = self._inferred_parser(batch) if self.fmt == "nginx.inferred" else self._json_parser(batch)
            self._batch(batch)
        notes = self.notes
        self.empty += reader.empty_lines
        self.records = reader.lines_read - self.empty
        if reader.error:                             # the unreadable rest of a cut gzip file is one record
            self._quarantine_rows([(reader.lines + 1, "", reader.error)])
            self.records += 1
            notes.append(reader.error)
        if reader.invalid_utf8_lines:
            notes.append(f"{len(reader.invalid_utf8_lines)} lines held bytes that are not UTF-8 (kept as \\xHH), "
                         f"first at line {reader.invalid_utf8_lines[0]}")
        if self.empty:
            notes.append(f"{self.empty:,} blank lines skipped (not records)")
        for t in ("_nginx_ip_map", "_nginx_new_ips"):
            self.con.execute(f"DROP TABLE IF EXISTS {t}")
        return LoadResult(self.records, self.loaded, self.quarantined, 0, tuple(notes))

    def _inferred_parser(self, batch: pa.Table) -> TextParser:
        """The format inferred from the file's first lines (as detection inferred it from its sample), or the one
        ingest inferred for each small file of a batch, with the combined and Common Log Format lines a file may
        hold besides."""
        text = self.ctx.inferred_format
        if text is None:
            head = batch.slice(0, 1000)            # blank lines (not records) do not count
            inferred = infer(inference_sample(zip(head.column("line_no").to_pylist(), head.column("line").to_pylist())))
            if inferred.text is None:
                raise ValueError(f"no nginx log format could be inferred from the first lines: {inferred.reason}")
            text = inferred.text
        self.notes.append(f"log_format inferred from the lines: '{text}'")
        return TextParser(with_fallbacks([text]))

    def _json_parser(self, batch: pa.Table) -> JsonParser:
        sample = [ln for ln in batch.column("line").slice(0, 5000).to_pylist() if ln.startswith("{")][:1000]
        parsed = [nginx_json.loads(ln) for ln in sample]
        self.json_objects = [o for o, _ in parsed if o is not None]
        self.json_default = self.fmt == "nginx.json_default" or any(r for _, r in parsed)
        fmt = nginx_json.infer(self.json_objects, self.json_default)
        if fmt is None:
            raise ValueError("the JSON objects do not look like an nginx access log (no status or request field)")
        self.json_keys = {k for o in self.json_objects for k in o}
        return JsonParser(fmt)

    def _widen_json(self) -> None:
        """A JSON log whose keys change within the file (log_format edited, nginx reloaded): when a batch holds
        top-level keys no earlier line had, the format is inferred again with lines holding them, so their fields
        load too instead of being dropped by a mapping made from the first lines."""
        keys = {k for (k,) in self._run("SELECT DISTINCT unnest(json_keys(line)) FROM _nginx_batch "
                                        "WHERE starts_with(line, '{') AND json_valid(line)")}
        new = keys - self.json_keys
        if not new:
            return
        self.json_keys |= new
        listed = ", ".join("'" + k.replace("'", "''") + "'" for k in sorted(new))
        lines = [ln for (ln,) in self._run(f"SELECT line FROM _nginx_batch WHERE starts_with(line, '{{') AND "
                                           f"json_valid(line) AND list_has_any(json_keys(line), [{listed}]) LIMIT 200")]
        self.json_objects += [o for o in (nginx_json.loads(ln)[0] for ln in lines) if o is not None]
        fmt = nginx_json.infer(self.json_objects, self.json_default)
        if fmt is not None and fmt.fields > self.parser.fmt.fields:
            self.parser = JsonParser(fmt, self.parser.hits)

    def _run(self, sql: str) -> list[tuple]:
        """Run `sql`, reading the arrow data of `scans` it names through query_with (never con.register: inside
        the file's transaction a registered batch would stay in memory until COMMIT)."""
        named = [n for n in self.scans if n in sql]
        if not named:
            return self.con.execute(sql).fetchall()
        assert len(named) == 1, named
        return query_with(self.con, named[0], self.scans[named[0]], sql)

    # -- one batch ----------------------------------------------------------------------------------------------
    def _batch(self, batch: pa.Table) -> None:
        lo, hi = batch.column("line_no")[0].as_py(), batch.column("line_no")[-1].as_py()
        self.redact = batch_flag(batch, MAY_HOLD_SECRET)
        cut = self.reader.oversized_in(lo, hi)
        if cut:          # only a prefix of these lines was read: never parsed, quarantined as cut
            rows = batch.filter(pc.is_in(batch.column("line_no"), pa.array(cut, pa.int64())))
            self._quarantine_rows([(n, line, self.reader.oversized_reason(n)) for n, line in
                                   zip(rows.column("line_no").to_pylist(), rows.column("line").to_pylist())])
            batch = batch.filter(pc.invert(pc.is_in(batch.column("line_no"), pa.array(cut, pa.int64()))))
            if not batch.num_rows:
                return
        self.scans["_nginx_batch"] = batch
        if self.json_objects is not None:
            self._widen_json()
        source, remaining = "_nginx_batch", batch.num_rows
        try:
            for variant in self.parser.variants():
                n = self._insert(variant, source)
                self.parser.hits[getattr(variant, "text", "json")] += n
                self.loaded += n
                if n == remaining:
                    remaining = 0
                    break
                left = self._rest(source, lo, hi)
                if source == "_nginx_batch":
                    self.empty += remaining - n - left
                source, remaining = self._last_rest, left
                if not remaining:
                    break
            if remaining:
                self._slow_path(source)
            self._walk_batch(lo, hi)
        finally:
            for name in ("_nginx_batch", "_nginx_rest0", "_nginx_rest1"):
                self.scans.pop(name, None)

    def _insert(self, variant, source: str) -> int:
        walk = getattr(variant, "walk_filter_sql", lambda: None)()
        if walk is not None:
            # no X-Forwarded-For logged: the few lines whose peer may need the walk (IPv6, an address list) are
            # picked by a cheap test on the raw line, their pairs walked first and joined in the insert
            converted = self._convert(f"({variant.extract_sql(f'(SELECT * FROM {source} WHERE {walk})')})")
            self._extend_ip_map(f"FROM ({converted}) WHERE {UNSETTLED}", run=self._run)
        # with X-Forwarded-For (most lines need the walk) the lines are parsed once: _walk_batch settles the rest
        return self._insert_converted(self._convert(f"({variant.extract_sql(source)}) WHERE ok"))

    def _insert_converted(self, converted: str) -> int:
        """Insert the loadable rows of `converted`, their client_ip completed from the pairs walked so far (no join
        while none was: a log of plain IPv4 peers and no X-Forwarded-For needs none); rows still unsettled get
        theirs once the batch is in (_walk_batch)."""
        if not self.walked:
            return self._run(f"INSERT INTO http_requests ({', '.join(INSERT_COLUMNS)})\n"
                             f"SELECT {', '.join(INSERT_COLUMNS)} FROM ({converted}) WHERE _reason IS NULL")[0][0]
        cols = ", ".join("coalesce(c.client_ip, m.client_ip)" if c == "client_ip" else f"c.{c}" for c in INSERT_COLUMNS)
        # the keys are NULL where client_ip is settled already (most rows): nothing to hash or probe for those
        sql = (f"INSERT INTO http_requests ({', '.join(INSERT_COLUMNS)})\n"
               f"SELECT {cols} FROM ({converted}) c LEFT JOIN _nginx_ip_map m "
               f"ON m.chain = CASE WHEN c.client_ip IS NULL THEN coalesce(c.forwarded_for, '') END "
               f"AND m.peer = CASE WHEN c.client_ip IS NULL THEN coalesce(c.remote_addr, '') END\n"
               f"WHERE c._reason IS NULL")
        return self._run(sql)[0][0]

    def _extend_ip_map(self, rows: str, run=None) -> None:
        """Walk each new (X-Forwarded-For, peer) pair of `rows` (a FROM ... WHERE clause over rows the SQL could not
        settle), once per file (netaddr's rule); `run` as netaddr.walk_pairs."""
        walk_pairs(self.con, "_nginx_new_ips",
                   f"SELECT DISTINCT coalesce(forwarded_for, '') AS chain, coalesce(remote_addr, '') AS peer {rows} "
                   f"EXCEPT SELECT chain, peer FROM _nginx_ip_map", self.trusted, run=run)
        self.con.execute("INSERT INTO _nginx_ip_map SELECT chain, peer, client_ip FROM _nginx_new_ips")
        self.walked += self.con.execute("SELECT count(client_ip) FROM _nginx_new_ips").fetchone()[0]

    def _walk_batch(self, lo: int, hi: int) -> None:
        """The client of the batch's rows the insert could not settle (IPv6 or odd hops in X-Forwarded-For, an
        IPv6 or odd peer): each new (X-Forwarded-For, peer) pair walked once per file (netaddr.walk_pairs: SQL,
        then Python's rule for the rest), the rows then updated from the stored values. Nothing is parsed twice;
        a batch of plain IPv4 traffic has no such rows and costs one scan of its stored rows."""
        rows = f"FROM http_requests WHERE file_id = {self.fid} AND line_no BETWEEN {lo} AND {hi} AND {UNSETTLED}"
        if not self.con.execute(f"SELECT EXISTS (SELECT 1 {rows})").fetchone()[0]:
            return
        self._extend_ip_map(rows)
        self.con.execute(f"""
            UPDATE http_requests AS h SET client_ip = m.client_ip FROM _nginx_ip_map AS m
            WHERE h.file_id = {self.fid} AND h.line_no BETWEEN {lo} AND {hi} AND h.client_ip IS NULL
              AND m.chain = coalesce(h.forwarded_for, '') AND m.peer = coalesce(h.remote_addr, '')
              AND m.client_ip IS NOT NULL""")

    def _convert(self, staged: str) -> str:
        return convert_sql(staged, self.fmt, self.fid, self.parser.time_field, self.parser.nginx_escapes,
                           self.ctx.window, self.redact, self.parser.fields)

    def _rest(self, source: str, lo: int, hi: int) -> int:
        """Lines of `source` (not empty) that no variant has inserted yet, as arrow data for the next variant (not a
        temp table: the lines are as read, keys and all, and DuckDB may spill a temp table to disk)."""
        self.tmp += 1
        self._last_rest = f"_nginx_rest{self.tmp % 2}"
        sql = (f"SELECT line_no, line FROM {source} WHERE line <> '' AND line_no NOT IN (SELECT line_no FROM "
               f"http_requests WHERE file_id = {self.fid} AND line_no BETWEEN {lo} AND {hi})")
        self.con.complete()
        rest = self.con.from_arrow(self.scans[source]).query(source, sql).to_arrow_table()
        if source != "_nginx_batch":
            del self.scans[source]                 # what the variants before this one left: read, not needed now
        self.scans[self._last_rest] = rest
        return rest.num_rows

    # -- the lines no SQL variant took ------------------------------------------------------------------------
    def _slow_path(self, source: str) -> None:
        rows = self._run(f"SELECT line_no, line FROM {source} ORDER BY line_no")
        staged, failed = [], []
        for line_no, line in rows:
            fields = self.parser.parse(line)
            if fields is None:
                failed.append((line_no, line, self._why(line, line_no)))
            else:
                staged.append((line_no, line, fields))
        if staged:
            table = pa.table({
                "line_no": pa.array([r[0] for r in staged], pa.int64()),
                "line": pa.array([r[1] for r in staged], pa.string()),
                **{f: pa.array([r[2].get(f) for r in staged], pa.string()) for f in STAGING_FIELDS},
            })
            self.scans["_nginx_slow"] = table
            try:
                converted = self._convert("_nginx_slow")
                self.loaded += self._insert_converted(converted)
                failed.extend(self._run(f"SELECT line_no, line, _reason FROM ({converted}) WHERE _reason IS NOT NULL"))
            finally:
                self.scans.pop("_nginx_slow")
        self._quarantine_rows(failed)

    def _why(self, line: str, line_no: int) -> str:
        if line_no == self.last_line_cut:
            return "last line cut short (no newline at the end of the file: copied while nginx was writing?)"
        if not line.strip():
            return "blank line"
        if _ERROR_LOG.match(line):
            return "an nginx error-log line, not an access-log record"
        if _SYSLOG.match(line):
            return "a journald/syslog prefix stands before the record"
        if self.fmt in JSON_FORMATS or isinstance(self.parser, JsonParser):
            return "not a JSON object (even after repairing \\xHH escapes)"
        if line.count('"') % 2:
            return "unbalanced quotes: the line is cut short or was not written by nginx"
        return f"does not match the {self.fmt} format"

    def _quarantine_rows(self, rows: list[tuple[int, str, str]]) -> None:
        if not rows:
            return
        table = pa.table({"record_no": pa.array([r[0] for r in rows], pa.int64()),
                          "raw": pa.array([r[1] for r in rows], pa.string()),
                          "reason": pa.array([r[2] for r in rows], pa.string())})
        query_with(self.con, "_nginx_quarantine", table, quarantine_sql(self.fid, "_nginx_quarantine"))
        self.quarantined += len(rows)
