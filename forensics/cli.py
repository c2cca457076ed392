"""Command line: `python -m forensics <command>`. Thin: parse arguments, call the library, print."""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import traceback
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from forensics import __version__, first_look, progress
from forensics.cli_help import INPUT_HELP, SCENARIO_NAMES, examples as _examples  # noqa: F401 (SCENARIO_NAMES: tests)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
QUARANTINE_LINES_SHOWN = 5
# control characters (C0, DEL, C1): in a file name or a logged value they would forge or hide console lines
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text) -> str:
    """`text` with every control character written \\xHH (a newline in a file name shows as \\x0a)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _say(text, file=None) -> None:
    """Print one line of the console output: every line the command line prints goes through here. Whatever it holds
    (file names, logged values) stays on that line, keys redacted (a path, a reason or an error may name one)."""
    from forensics.secrets import redact_text

    print(printable(redact_text(str(text))), file=file if file is not None else sys.stdout)


class UsageError(Exception):
    """Bad flag, missing file: exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 itself; keep its one line, no usage dump
        raise UsageError(message)


class RAW(argparse.HelpFormatter):
    """Descriptions wrapped as usual; the examples epilog kept line by line, as written."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="forensics", description="Investigate abuse of LLM gateways from their logs.")
    parser.add_argument("--version", action="version", version=f"forensics {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show Python tracebacks on errors")

    p = sub.add_parser("ingest", parents=[common], epilog=_examples("ingest"),
                       formatter_class=RAW, help="load log files into a case database",
                       description="Detect each file's format from its content and load it into the case database. "
                                   "INPUT: log files (plain or .gz) and folders (searched recursively).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="log files (plain or .gz) and folders")
    p.add_argument("--case", required=True, metavar="CASE.duckdb", help="case database (created if absent)")
    p.add_argument("--json", action="store_true", help="print one JSON array (an object per file) instead of a table")
    _add_load_options(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("report", parents=[common], epilog=_examples("report"),
                       formatter_class=RAW, help="run the whole investigation and write findings.json",
                       description="Load INPUT (log files, folders, or a case database) and run the investigation: "
                                   "incidents, attribution, reconciliation, projection, controls replay. Writes "
                                   "DIR/findings.json, DIR/report.html (self-contained), DIR/report.md with "
                                   "DIR/figures/*.png, DIR/steps.sql (and DIR/case.duckdb when INPUT holds logs).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUT_HELP)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created): findings.json, report.html, report.md, figures/, steps.sql, "
                        "response/ (nginx, LiteLLM and provider actions to review) and case.duckdb for logs")
    p.add_argument("--control", action="append", default=[], metavar="ID", dest="controls",
                   help="replay this control too, e.g. key_rpm_35, ip_rate_5rps, cost_alert_20h_5m (repeatable)")
    p.add_argument("--no-detector", action="store_true", help="leave the anomaly detector out of the report")
    p.add_argument("--timings", action="store_true",
                   help="print on stderr, at the end, the seconds each phase took and the slowest named SQL steps")
    p.add_argument("--config", action="append", default=[], metavar="FILE", dest="configs",
                   help="a LiteLLM config.yaml, nginx configuration or LiteLLM startup log to audit into the report's "
                        "configuration section (repeatable)")
    _add_load_options(p, shareable=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", parents=[common], epilog=_examples("export"),
                       formatter_class=RAW, help="write the evidence bundle for a provider refund request",
                       description="Run the investigation on INPUT and write, for the incidents with an attack "
                                   "verdict on one provider's bill, the bundle a billing team asks for: request.md "
                                   "(cover letter draft), requests.csv, cost_per_minute.csv, cost_per_hour.csv, "
                                   "baseline_vs_incident.csv, reconciliation.csv, the timeline PNG, "
                                   "chain_of_custody.json and MANIFEST.sha256 (sha256sum format).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUT_HELP)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the bundle folder (absent or empty); nothing is written, exit 1, when no incident has an "
                        "attack verdict")
    p.add_argument("--provider", choices=["openai", "anthropic"],
                   help="whose bill to dispute (default: the provider with the most attack cost)")
    p.add_argument("--zip", action="store_true", help="also write DIR.zip")
    _add_load_options(p, shareable=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-case", parents=[common], epilog=_examples("export-case"),
                       formatter_class=RAW, help="write the case as Parquet, for Spark, Trino, ClickHouse or DuckDB",
                       description="Load INPUT and write every case table as Parquet to DIR: the tables with a time "
                                   "partitioned by its UTC day (hive layout, DIR/llm_requests/day=YYYY-MM-DD/), the "
                                   "others one file each, and DIR/forensics_case.json (each table's rows). DIR is "
                                   "itself an INPUT of report, export and detect, read in place.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUT_HELP)
    p.add_argument("--parquet", required=True, metavar="DIR", help="the folder to write (absent or empty)")
    _add_load_options(p, shareable=True)
    p.set_defaults(func=cmd_export_case)

    p = sub.add_parser("verify", parents=[common], epilog=_examples("verify"),
                       formatter_class=RAW, help="re-check an evidence bundle against its MANIFEST.sha256",
                       description="Exit 0 when every file of DIR matches its MANIFEST.sha256 line and no file is "
                                   "missing or extra; exit 1 otherwise, naming each offending file.")
    p.add_argument("bundle", metavar="DIR", help="an evidence bundle folder written by export")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("detect", parents=[common], epilog=_examples("detect"),
                       formatter_class=RAW, help="anomaly scores for every LLM request (isolation forest)",
                       description="Train isolation forests on the case's quiet requests (all but those the "
                                   "incident search claims, with every fourth block held back to check the alert "
                                   "rate on; or every request in --train-start/--train-end), calibrated to at most "
                                   "--alerts-per-day false alerts there, then score every LLM request. Writes "
                                   "SCORES.csv: request_id,score,flagged,reasons (higher score = more anomalous). "
                                   "Logs named in INPUT are loaded into case.duckdb beside SCORES.csv.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUT_HELP)
    p.add_argument("--out", required=True, metavar="SCORES.csv", help="the scores, one row per LLM request")
    p.add_argument("--model", type=Path, metavar="FILE", help="score with a saved detector instead of training")
    p.add_argument("--save", type=Path, metavar="FILE", help="save the trained detector (FILE and FILE.json card)")
    p.add_argument("--train-start", metavar="ISO_UTC", type=_iso_utc,
                   help="start of the training window (with --train-end; before it)")
    p.add_argument("--train-end", metavar="ISO_UTC", type=_iso_utc)
    p.add_argument("--alerts-per-day", type=_alerts_per_day, default=1.0, metavar="N",
                   help="false alerts a day the threshold allows on the baseline (never more than 0.5 %% of "
                        "its requests): a number >= 0 (default 1)")
    _add_load_options(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("simulate", parents=[common], epilog=_examples("simulate"),
                       formatter_class=RAW, help="write a synthetic incident in the real log formats",
                       description="Write a scenario's LiteLLM, nginx and provider logs plus truth.json.")
    p.add_argument("--scenario", required=True, metavar="NAME", help="one of: " + ", ".join(SCENARIO_NAMES))
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the logs and truth.json (created)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--nginx-log-format", default="json", dest="nginx_log_format",
                   choices=["json", "combined", "main", "timings", "ingress"], help="nginx log format to write")
    p.add_argument("--randomize", action="store_true",
                   help="write the logs of a deployment drawn from the seed instead of the default set: which of "
                        "LiteLLM, nginx and provider data exist, LiteLLM's sink, the nginx format (possibly a custom "
                        "log_format), time zone and rotation, a load balancer or not, virtual keys or none, 10 "
                        "minutes to 30 days of history, provider bucket widths (truth.json: \"deployment\")")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("audit", parents=[common], help="check LiteLLM and nginx configuration for what enables abuse",
                       description="Check LiteLLM config.yaml files (with their include: files), nginx configuration "
                                   "(nginx.conf and its includes, or nginx -T output) and LiteLLM's startup log "
                                   "against the incident write-up's checklist. Each finding: severity, file and line, "
                                   "why, what it costs, the fix. Exit 0 when nothing high or critical is found, 1 "
                                   "when something is, 2 when a file cannot be read.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="config files or folders")
    p.add_argument("--json", action="store_true", help="print the findings as JSON (schema forensics.audit/1)")
    p.add_argument("--env-file", metavar="FILE", type=Path,
                   help="KEY=VALUE file that resolves os.environ/ references (default: they stay references)")
    p.add_argument("--case", metavar="CASE.duckdb", type=Path,
                   help="price each finding with the case's controls replay instead of the write-up's figures")
    p.set_defaults(func=cmd_audit)
    return parser


def _alerts_per_day(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of alerts a day (a finite number >= 0)")
    return value


def _iso_utc(text: str):
    """An ISO 8601 time as naive UTC (Z or an offset converted; no offset is UTC)."""
    from datetime import timezone

    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-16T02:00:00Z)") from None
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo is not None else t


def _add_load_options(p: argparse.ArgumentParser, shareable: bool = False) -> None:
    if shareable:     # the command writes documents that leave the machine
        p.add_argument("--absolute-paths", action="store_true",
                       help="keep the absolute paths of input files (default: relative to the input folder)")
    p.add_argument("--nginx-format", metavar="LOG_FORMAT",
                   help="an nginx log_format string for access logs in a custom format (always used: an nginx "
                        "access log it does not fit fails, with the first field that did not match)")
    p.add_argument("--nginx-conf", action="append", default=[], metavar="FILE", dest="nginx_conf",
                   help="the server's nginx.conf or a saved `nginx -T` output (repeatable; includes followed): "
                        "its log_format and access_log lines tell each access log's format")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR", dest="trusted_proxies",
                   help="address range of your own load balancers (repeatable; default: private ranges)")
    p.add_argument("--prices", metavar="CSV", type=Path,
                   help="price overrides for custom deployments: provider,model,input_mtok,output_mtok,... "
                        "(the whole case is re-priced; the prices stay in the case for later runs)")


def _load_options(args):
    from forensics.sources import LoadOptions

    if args.prices is not None:
        from forensics.pricing import load_overrides

        if not args.prices.is_file():
            raise UsageError(f"{args.prices}: no such price file")
        try:
            load_overrides(args.prices)
        except (ValueError, UnicodeDecodeError) as e:
            raise UsageError(str(e).splitlines()[0]) from None
    for cidr in args.trusted_proxies:
        import ipaddress

        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise UsageError(f"--trusted-proxy {cidr!r} is not an address range") from None
    for conf in args.nginx_conf:
        if not Path(conf).is_file():
            raise UsageError(f"--nginx-conf {conf}: no such file")
    if args.nginx_conf:
        from forensics.sources.nginx.nginx_logconf import load_log_conf

        load_log_conf(tuple(args.nginx_conf))     # a configuration nginx would refuse: one line naming file and line
    return LoadOptions(nginx_format=args.nginx_format, nginx_conf=tuple(args.nginx_conf),
                       trusted_proxies=tuple(args.trusted_proxies), price_overrides=args.prices)


def _redacted(text: str) -> str:
    from forensics.secrets import redact_text

    return redact_text(text)


@contextmanager
def _slow_file_progress(path: Path):
    """A spinner on stderr for a file that takes more than a second (terminals only)."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("loading {task.description}"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    from rich.markup import escape

    timer = threading.Timer(1.0, lambda: (progress.start(), progress.add_task(escape(printable(_redacted(path.name))))))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        progress.stop()


def _status_line(line: str) -> None:
    """A progress line of a long ingest on stderr (every few seconds, on a terminal or not)."""
    if progress.active():
        progress.note(line)
    else:
        print(printable(line), file=sys.stderr, flush=True)


def _file_phase(path: Path):
    """A progress line per file loaded (report, export): plain lines on stderr, terminal or not."""
    return progress.phase(f"loading {printable(path.name)}")


def cmd_ingest(args) -> int:
    from forensics.api import Case, NotACase

    options = _load_options(args)
    if Path(args.case).is_dir():
        raise UsageError(f"--case {args.case}: a folder; name the case database file "
                         f"(e.g. {Path(args.case) / 'case.duckdb'})")
    cases, logs = _split_inputs(args.inputs)
    for c in cases:
        if Path(c).resolve() == Path(args.case).resolve():
            raise UsageError(f"{c} is the case being written (--case); name other cases to merge into it")
    _check_logs(logs, cases)
    folder = Path(args.case).resolve().parent
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder for the case database")
    try:
        case = Case.open(args.case, options=options)
    except NotACase as e:
        raise UsageError(str(e)) from None
    with case:
        _merge_cases(case, cases)
        if logs:
            case.ingest(logs, progress=_slow_file_progress, status=_status_line)
        reports = case.reports
        _print_file_problems(reports)
        for r in reports:
            if r.status == "failed" and args.debug and getattr(r, "error", None) is not None:
                traceback.print_exception(r.error)
            elif r.quarantined and not r.skipped and r.format != "unrecognised":
                _print_quarantine(case, r)
    if args.json:
        from forensics.secrets import redact_text

        print(redact_text(json.dumps([r.contract() for r in reports], indent=2)))   # JSON escapes control characters
    else:
        _print_ingest_table(reports)
    return EXIT_FAILED if _failed(reports) else EXIT_OK


def _print_quarantine(case, report) -> None:
    """The first quarantined records of a file, one line each: file, line, problem."""
    rows = case.execute(
        "SELECT q.record_no, q.reason FROM quarantine q JOIN ingest_files f USING (file_id) "
        "WHERE f.sha256 = ? AND f.status = 'loaded' ORDER BY q.record_no LIMIT ?",
        [report.sha256, QUARANTINE_LINES_SHOWN],
    ).fetchall()
    for record_no, reason in rows:
        _say(f"{report.path} line {record_no}: {reason}", file=sys.stderr)
    if report.quarantined > len(rows):
        _say(f"{report.path}: {report.quarantined - len(rows)} more quarantined (table quarantine)", file=sys.stderr)


def _print_ingest_table(reports) -> None:
    header = ("format", "records", "loaded", "quarantined", "file")
    rows = [
        (r.format or "-", r.records, r.loaded, r.quarantined,
         r.path + (" (skipped: already in the case)" if r.skipped else " (FAILED)" if r.status == "failed" else ""))
        for r in reports
    ]
    total = ("total", sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows), f"{len(rows)} files")
    widths = [max(len(str(x[i])) for x in [header, *rows, total]) for i in range(5)]
    for row in [header, *rows, total]:
        _say("  ".join(str(v).ljust(w) if i in (0, 4) else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


def _split_inputs(inputs) -> tuple[list[str], list[str]]:
    """(cases, log files and folders) among INPUT (api.split_inputs); a named case must exist: a DuckDB file or a
    Parquet case folder."""
    from forensics.api import case_exists, split_inputs

    cases, logs = split_inputs(inputs)
    for c in cases:
        if not case_exists(c):
            raise UsageError(f"{c}: no such case database")
    return cases, logs


def _check_logs(logs: list[str], cases: list[str] = ()) -> None:
    """Every log input exists and is a file or a folder (a FIFO or a device is a usage error: reading it would hang),
    and together the inputs hold at least one file (an empty folder is no evidence); a note for each special file a
    folder holds, which ingest leaves out."""
    from forensics.ingest import NotAFile, expand_inputs

    skipped: list = []
    try:
        files = expand_inputs(logs, skipped)
    except (FileNotFoundError, NotAFile) as e:
        raise UsageError(str(e)) from None
    for path, kind in skipped:
        _say(f"forensics: {path}: note: skipped, {kind} is not a regular file", file=sys.stderr)
    if not files and not cases:
        raise UsageError(f"{', '.join(logs)}: no file to read (an empty folder is no evidence of anything)")


def _merge_cases(case, cases: list[str]) -> None:
    """Merge each named case into `case`; a file that is no case database is a usage error."""
    from forensics.api import NotACase

    try:
        case.merge(cases)
    except NotACase as e:
        raise UsageError(str(e)) from None


def open_case(inputs: list[str], out_dir: Path, options, file_progress=None):
    """The Case for INPUT (see api.Case.from_inputs), with one line per file that failed or has a note."""
    from forensics.api import Case, NotACase

    _check_logs(*reversed(_split_inputs(inputs)))
    try:
        case = Case.from_inputs(inputs, out_dir, options, progress=file_progress or _slow_file_progress,
                                status=_status_line)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except NotACase as e:
        raise UsageError(str(e)) from None
    _print_file_problems(case.reports)
    return case


def _print_file_problems(reports) -> None:
    """One line per file that failed, was not recognised, or loaded with a note (a cut gzip, a page missing...)."""
    for r in reports:
        if r.skipped:
            continue
        if r.status == "failed" or r.format == "unrecognised":
            _say(f"forensics: {r.path}: {r.message}", file=sys.stderr)
        elif r.message:
            _say(f"forensics: {r.path}: note: {r.message}", file=sys.stderr)


def _failed(reports) -> bool:
    return any(r.status == "failed" or (r.format == "unrecognised" and not r.skipped) for r in reports)


def cmd_report(args) -> int:
    from forensics.analysis.controls import DEFAULT_CONTROLS, parse_control
    from forensics.api import write_report

    try:
        extra = [parse_control(c) for c in args.controls]
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a folder")
    if args.configs:
        from forensics.audit import ConfigError, audit

        try:
            audit(args.configs)             # a file that cannot be read fails now, not after the investigation
        except (ConfigError, FileNotFoundError) as e:
            raise UsageError(str(e)) from None
    options = _load_options(args)
    with progress.reporting(redact=_redacted):
        look = _first_look(args.inputs, options)
        try:
            with open_case(args.inputs, out, options, _file_phase) as case:
                result, model = write_report(case, out, [*DEFAULT_CONTROLS, *extra],
                                             run_detector=not args.no_detector,
                                             absolute_paths=args.absolute_paths, configs=args.configs)
                reports, steps = case.reports, case.steps
        except BaseException:
            if look:
                look.stop.set()           # it says nothing more; the error is the news
            raise
        seen = look.finish() if look else None
        if seen is not None:
            progress.note(first_look.compare(seen, result["incidents"]))
        if args.timings:
            for line in _timings(progress.timings(), steps.seconds):
                _say(line, file=sys.stderr)
    for inc in result["incidents"]:
        cost = "cost unknown (nginx only)" if inc["sources"] == ["nginx"] else f"${inc['cost_usd']:,.2f}"
        _say(f"{inc['id']} {inc['verdict']} {inc['kind']}: {inc['start']} .. {inc['end']}, "
              f"{inc['requests']} requests, {cost}")
    if not result["incidents"]:
        _say("no incident found")
    _say(f"status: {result['status']}" + (f" (missing: {', '.join(result['coverage']['missing'])})"
                                           if result["status"] == "inconclusive" else ""))
    _say(f"wrote {out / 'findings.json'}, {out / 'report.html'}, {out / 'report.md'} and "
          f"{len(model['figures'])} figures in {out / 'figures'}")
    return EXIT_FAILED if _failed(reports) else EXIT_OK


def _timings(phases: list[tuple[str, float]], steps: dict[str, float], most: int = 15) -> list[str]:
    """`report --timings`: the phases in the order they ended, then the slowest named SQL steps (their share of
    the analysis phases)."""
    out = ["timings: seconds per phase"] + [f"  {seconds:8.2f}  {printable(name)}" for name, seconds in phases]
    out.append(f"  {sum(s for _, s in phases):8.2f}  all phases")
    slowest = sorted(steps.items(), key=lambda kv: -kv[1])[:most]
    out += [f"timings: the {len(slowest)} slowest of {len(steps)} named SQL steps"]
    out += [f"  {seconds:8.2f}  {name}" for name, seconds in slowest]
    return out


def _first_look(inputs: list[str], options):
    """The preliminary incident line from the LiteLLM logs (forensics.first_look), started beside the full ingest
    when INPUT is logs only (a case database named among INPUT is searched in about a second anyway)."""
    cases, logs = _split_inputs(inputs)
    if cases or not logs:
        return None
    return first_look.FirstLook(logs, options, lambda line: progress.note(printable(line))).start()


def cmd_export_case(args) -> int:
    import tempfile

    from forensics import parquet_case

    out = Path(args.parquet)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--parquet {out}: not an empty folder; a Parquet case needs a folder of its own")
    with tempfile.TemporaryDirectory(prefix="forensics-export-case-") as tmp:
        with progress.reporting(redact=_redacted), open_case(args.inputs, Path(tmp), _load_options(args),
                                                             _file_phase) as case:
            with progress.phase("writing the case as Parquet"):
                manifest = parquet_case.export(case.con, out)
            reports = case.reports
    tables = manifest["tables"]
    _say(f"wrote {out}: {sum(t['rows'] for t in tables.values()):,} rows in "
         f"{sum(1 for t in tables.values() if t['rows'])} tables ({out / parquet_case.MANIFEST})")
    return EXIT_FAILED if _failed(reports) else EXIT_OK


def cmd_export(args) -> int:
    import tempfile
    from datetime import timezone

    from forensics.api import write_bundle
    from forensics.outputs import bundle

    started = datetime.now(timezone.utc)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: not an empty folder; the bundle needs a folder of its own")
    if args.zip:
        try:
            bundle.zip_path(out)               # DIR.zip goes beside DIR: DIR must have a name
        except ValueError as e:
            raise UsageError(str(e)) from None
    from forensics.api import NothingToDispute

    with tempfile.TemporaryDirectory(prefix="forensics-export-") as tmp:
        with progress.reporting(redact=_redacted):        # a line per log loaded; the rest is quiet: when there
            case = open_case(args.inputs, Path(tmp), _load_options(args), _file_phase)   # is nothing to dispute,
        with case:                                                                    # that is the one line
            try:
                written = write_bundle(case, out, args.provider, command_line=["forensics", *sys.argv[1:]],
                                       absolute_paths=args.absolute_paths, started=started)
            except NothingToDispute as e:
                _say(f"forensics: {e}", file=sys.stderr)
                return EXIT_FAILED
            reports = case.reports
    chosen = json.loads((out / "chain_of_custody.json").read_text())
    _say(f"{len(chosen['incidents'])} incident(s) on the {chosen['provider'] or 'no'} bill: "
         f"{', '.join(chosen['incidents']) or 'nothing to dispute'}; wrote {len(written)} files and "
         f"{out / bundle.MANIFEST}")
    if args.zip:
        _say(f"wrote {bundle.zip_bundle(out)}")
    return EXIT_FAILED if _failed(reports) else EXIT_OK


def cmd_verify(args) -> int:
    from forensics.outputs import bundle

    folder = Path(args.bundle)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such bundle folder")
    problems = bundle.verify(folder)
    for p in problems:
        _say(f"forensics: {folder}: {p}", file=sys.stderr)
    if problems:
        return EXIT_FAILED
    n = len(bundle._bundle_files(folder))
    _say(f"{folder}: {n} files match {bundle.MANIFEST}")
    return EXIT_OK


def cmd_detect(args) -> int:
    from forensics.detect.model import ModelMismatch
    from forensics.detect.run import detect
    from forensics.outputs.safe import write_csv

    window = None
    if (args.train_start is None) != (args.train_end is None):
        raise UsageError("give both --train-start and --train-end, or neither")
    if args.train_start is not None:
        if args.train_start >= args.train_end:
            raise UsageError(f"--train-start {args.train_start.isoformat()}Z is not before --train-end "
                             f"{args.train_end.isoformat()}Z: the training window is empty")
        window = (args.train_start, args.train_end)
    if args.model is not None and not Path(f"{args.model}.json").is_file():
        raise UsageError(f"{args.model}: no such detector (its card {args.model}.json is missing)")
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out}: a folder; name the scores CSV file")
    with open_case(args.inputs, out.parent if str(out.parent) else Path("."), _load_options(args)) as case:
        reports = case.reports
        try:
            scores, det, _ = detect(case, args.model, args.save, window, args.alerts_per_day)
        except (ModelMismatch, ValueError) as e:
            _say(f"forensics: {e}", file=sys.stderr)
            return EXIT_FAILED
    if det.card.note:        # too little quiet data: said in one line, the scores written all the same
        _say(f"forensics: {det.card.note}", file=sys.stderr)
    # the bundle's CSV rule (outputs/safe.py): formula cells neutralised, hidden characters visible; atomic
    write_csv(out, list(scores.columns), scores.itertuples(index=False, name=None))
    _say(f"{int(scores['flagged'].sum())} of {len(scores)} requests flagged (threshold {det.card.threshold:.4f}, "
          f"trained on {det.card.train_start} .. {det.card.train_end}); wrote {out}")
    return EXIT_FAILED if _failed(reports) else EXIT_OK


def cmd_simulate(args) -> int:
    from forensics.simulate import SCENARIOS, simulate

    if args.scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {args.scenario!r}; one of: {', '.join(SCENARIOS)}")
    deployment = None
    if args.randomize:
        from forensics.simulate import draw_deployment

        deployment = draw_deployment(args.seed, args.scenario)
    truth = simulate(args.scenario, Path(args.out), seed=args.seed, nginx_format=args.nginx_log_format,
                     deployment=deployment)
    if deployment is not None:
        from forensics.simulate.matrix import describe

        print(f"deployment: {describe(deployment)}")
        if deployment.nginx_format == "custom":
            print(f"nginx access logs in a custom format: pass --nginx-format \"{deployment.nginx_log_format}\"")
    for inc in truth.get("incidents", []):
        _say(f"{inc['id']}: {inc['kind']} {inc['start']} .. {inc['end']}: {inc['requests']} requests, "
             f"${float(inc['cost_usd']):,.2f}")
    _say(f"wrote {args.out}/truth.json")
    return EXIT_OK


def cmd_audit(args) -> int:
    from forensics.audit import ConfigError, audit
    from forensics.audit import render
    from forensics.audit.finding import blocking

    if args.env_file is not None and not args.env_file.is_file():
        raise UsageError(f"--env-file {args.env_file}: no such file")
    money = None
    if args.case is not None:
        from forensics.api import Case, NotACase
        from forensics.audit.money import from_investigation

        if not args.case.is_file():
            raise UsageError(f"--case {args.case}: no such case database")
        try:
            case = Case.open(args.case, read_only=True)      # not one byte of it changes
        except NotACase as e:
            raise UsageError(str(e)) from None
        with case:
            money = from_investigation(case.investigate())
    try:
        result = audit(args.configs, args.env_file, money)
    except (ConfigError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(render.json_text(result))
    else:
        for line in render.text_lines(result):
            _say(line)
    return EXIT_FAILED if blocking(result.findings) else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        return args.func(args)
    except UsageError as e:
        _say(f"forensics: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("forensics: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # the one place an unexpected error becomes one line
        if debug:
            raise
        from forensics.secrets import redact_text

        _say(f"forensics: error: {redact_text(str(e).splitlines()[0] if str(e) else type(e).__name__)} "
             "(run with --debug for details)", file=sys.stderr)
        return EXIT_FAILED
