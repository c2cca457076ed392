"""The evidence bundle for a provider refund request (`export`) and its check (`verify`).

A bundle is a folder: a cover letter draft, the incident's requests and costs as CSV, the baseline beside the
incident, the reconciliation with the price table used, the timeline figure, a chain of custody, and
MANIFEST.sha256 in `sha256sum` format listing every other file. Safe to share: keys only as sha256 hash and
`sk-...abcd` hint (the case never holds more), CSV cells a spreadsheet would execute are neutralised, and paths of
the analyst's machine are cut to the input folder unless asked for.
"""
from __future__ import annotations

import io
import os
import platform
import sys
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd

from forensics import __version__
from forensics.analysis.evidence import Evidence
from forensics.ingest import file_sha256
from forensics.outputs import figures as figs
from forensics.outputs.atomic import staged, write_bytes
from forensics.outputs.findings import iso
from forensics.outputs.letter import letter
from forensics.outputs.paths import shareable_paths
from forensics.outputs.safe import FORMULA_START, json_text, neutralise, printable, write_csv  # noqa: F401
from forensics.secrets import redact_text

MANIFEST = "MANIFEST.sha256"
# the files every bundle holds, whatever the case (the timeline PNG and usage_outside_proxy.csv depend on it)
ALWAYS = ("request.md", "requests.csv", "cost_per_minute.csv", "cost_per_hour.csv", "baseline_vs_incident.csv",
          "reconciliation.csv", "chain_of_custody.json")


def money_text(v) -> str:
    """Exact USD as text: the case's DECIMAL(38,12) without trailing zeros."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    return format(d.quantize(Decimal("0.000000000001")).normalize(), "f")


# --- the bundle's content --------------------------------------------------------------------------------------------

def build(ev: Evidence, inv, findings: dict, out: Path, command_line: list[str] | None = None,
          absolute_paths: bool = False, started: datetime | None = None) -> list[Path]:
    """Write the bundle for the evidence `ev` (analysis/evidence.py) into `out` (created; must be empty or absent)
    and return the files written. All or nothing: every file is written into a staging folder inside `out`, then
    renamed into it, chain_of_custody.json and MANIFEST.sha256 last (outputs/atomic.py): a bundle with its manifest
    is whole, and a failure leaves `out` as it was."""
    with staged(out, last=("chain_of_custody.json", MANIFEST)) as tmp:
        written = _write(ev, inv, findings, tmp, command_line, absolute_paths, started)
    return [out / p.relative_to(tmp) for p in written]


def _write(ev: Evidence, inv, findings: dict, out: Path, command_line: list[str] | None, absolute_paths: bool,
           started: datetime | None) -> list[Path]:
    started = started or datetime.now(timezone.utc)
    provider, chosen = ev.provider, ev.chosen
    written: list[Path] = []

    reqs = ev.requests
    cols = ["incident", "request_id", "litellm_call_id", "start_time_utc", "end_time_utc", "provider",
            "requested_model", "model", "status", "error_code", "prompt_tokens", "completion_tokens",
            "cache_read_tokens", "cache_write_tokens", "max_tokens", "cost_usd", "litellm_logged_spend_usd",
            "client_ip", "key_hash", "key_hint", "user_agent", "start_time_as_logged"]
    rows = ([r.incident, r.request_id, r.litellm_call_id, iso(r.start_time), iso(r.end_time), r.provider,
             r.requested_model, r.model, r.status, r.error_code, _int(r.prompt_tokens), _int(r.completion_tokens),
             _int(r.cache_read_tokens), _int(r.cache_write_tokens), _int(r.max_tokens), money_text(r.cost_usd),
             money_text(r.spend_logged), r.client_ip, r.key_hash, r.key_hint, r.user_agent, r.start_time_raw]
            for r in reqs.itertuples())
    write_csv(out / "requests.csv", cols, rows)
    written.append(out / "requests.csv")

    minutes = ev.minutes
    write_csv(out / "cost_per_minute.csv", ["incident", "minute_utc", "requests", "successful", "prompt_tokens",
                                            "completion_tokens", "cost_usd"],
              ([r.incident, iso(r.minute), r.requests, r.successful, r.prompt_tokens, r.completion_tokens,
                money_text(r.cost_usd)] for r in minutes.itertuples()))
    written.append(out / "cost_per_minute.csv")

    hour_rows = []
    for f in chosen:
        if not f.request_ids or f.series is None:
            continue
        hours = f.series.hourly
        hour_rows += [[f.incident.id, iso(h.hour), h.incident_requests, money_text(h.incident_cost_usd),
                       h.other_requests, money_text(h.other_cost_usd)] for h in hours.itertuples()]
    outside_rows = []
    for f in chosen:
        if f.provider_buckets is not None and len(f.provider_buckets):
            outside_rows += [[f.incident.id, f.provider, f.provider_key_id, iso(b), money_text(c)]
                             for b, c in zip(f.provider_buckets["bucket_start"], f.provider_buckets["cost_usd"])]
    write_csv(out / "cost_per_hour.csv", ["incident", "hour_utc", "incident_requests", "incident_cost_usd",
                                          "other_requests", "other_cost_usd"], hour_rows)
    written.append(out / "cost_per_hour.csv")
    if outside_rows:
        write_csv(out / "usage_outside_proxy.csv", ["incident", "provider", "provider_key_id", "bucket_start_utc",
                                                    "cost_usd_at_list_prices"], outside_rows)
        written.append(out / "usage_outside_proxy.csv")

    disputed = ev.disputed
    base = findings["baseline"]
    bvi = [["baseline (hours without incident traffic)", money_text(base["cost_per_hour_usd"]),
            f"{base['requests_per_hour']:.3f}", "", ""]]
    for f in chosen:                      # every figure from analysis/headline.py, as the report prints it
        h = f.headline
        bvi.append([f"{f.incident.id} ({iso(f.incident.start)} .. {iso(f.incident.end)})",
                    money_text(h.mean_cost_per_hour_usd.quantize(Decimal("0.000001"))),
                    f"{Decimal(h.requests) / h.hours:.3f}",
                    money_text(h.peak_cost_per_hour_usd) if h.peak_cost_per_hour_usd is not None else "",
                    "" if h.times_baseline is None else f"{h.times_baseline:.1f}"])
    write_csv(out / "baseline_vs_incident.csv", ["period", "mean_cost_usd_per_hour", "requests_per_hour",
                                                 "peak_cost_usd_per_hour", "peak_times_baseline"], bvi)
    written.append(out / "baseline_vs_incident.csv")

    price_tables = ev.price_tables
    rec_rows = []
    for rec in inv.reconciliation:
        if provider and rec.provider != provider or rec.daily is None:
            continue
        rec_rows += [[rec.provider, iso(r.bucket_start), iso(r.bucket_end), money_text(r.provider_cost_usd),
                      money_text(r.proxy_cost_usd), money_text(r.proxy_logged_usd), money_text(r.unexplained_usd),
                      price_tables] for r in rec.daily.itertuples()]
    write_csv(out / "reconciliation.csv", ["provider", "bucket_start_utc", "bucket_end_utc", "provider_billed_usd",
                                           "proxy_repriced_usd", "proxy_logged_usd", "unexplained_usd",
                                           "price_table"], rec_rows)
    written.append(out / "reconciliation.csv")

    for f in chosen:
        if f.request_ids:
            fig = figs.timeline_figure(f, inv.band)
        else:
            fig = figs.provider_figure(f)
        if fig is not None:
            (out / f"{fig.name}.png").write_bytes(fig.png)
            written.append(out / f"{fig.name}.png")

    if ev.per_minute is not None:
        write_csv(out / "reconciliation_per_minute.csv",
                  ["minute_utc", "provider_requests", "disputed_requests", "legitimate_requests", "difference",
                   "provider_output_tokens", "proxy_completion_tokens", "provider_key_ids"],
                  ([iso(r.minute), r.provider_requests, r.disputed_requests, r.legitimate_requests, r.difference,
                    r.provider_output_tokens, r.proxy_completion_tokens, r.provider_key_ids]
                   for r in ev.per_minute.itertuples()))
        written.append(out / "reconciliation_per_minute.csv")
    (out / "request.md").write_text(letter(ev, findings), encoding="utf-8")
    written.append(out / "request.md")

    files = [(f["path"], f["sha256"], f["size_bytes"], f["format"], f["records"], f["loaded"], f["quarantined"],
              f["started_at"]) for f in ev.files]
    names = shareable_paths([f[0] for f in files], absolute_paths)
    custody = {
        "schema": "forensics.custody/1",
        "tool": "forensics", "tool_version": __version__,
        "python": platform.python_version(), "duckdb": duckdb.__version__,
        "command_line": [printable(a) for a in _shareable_argv(command_line or sys.argv, absolute_paths)],
        "started_at": iso(started.replace(microsecond=0)),
        "finished_at": iso(datetime.now(timezone.utc).replace(microsecond=0)),
        "provider": provider, "incidents": [f.incident.id for f in chosen],
        "price_table": price_tables,
        "inputs": [{"path": names[p], "sha256": s, "size_bytes": size, "format": fmt, "records": rec, "loaded": lo,
                    "quarantined": q, "ingested_at": iso(at)} for p, s, size, fmt, rec, lo, q, at in files],
        "files": [{"path": p.name, "sha256": digest, "size_bytes": size}
                  for p in written for digest, size in [file_sha256(p)]],
    }
    (out / "chain_of_custody.json").write_text(json_text(custody, indent=2) + "\n", encoding="utf-8")
    written.append(out / "chain_of_custody.json")
    write_manifest(out)
    return written


def _int(v):
    return None if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA else int(v)


def _finding(findings: dict, incident_id: str) -> dict:
    return next(i for i in findings["incidents"] if i["id"] == incident_id)


def _shareable_argv(argv: list[str], absolute: bool) -> list[str]:
    """The command line as it may leave the machine: paths cut (unless `absolute`), keys redacted (a path named on
    it may hold one, as the case's own paths do)."""
    if absolute:
        return [redact_text(a) for a in argv]
    out = []
    for a in argv:
        out.append(redact_text(os.path.relpath(a) if os.path.isabs(a) and a.startswith(os.getcwd() + os.sep)
                               else os.path.basename(a) if os.path.isabs(a) else a))
    return out


# --- manifest and verify -----------------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    return file_sha256(path)[0]


def _scan(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(regular files, symbolic links, anything else) under `folder` as sorted relative paths; links to folders are
    not followed."""
    files, links, others = [], [], []
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in [*dirs, *names]:
            p = base / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                links.append(rel)
            elif name in names:
                (files if p.is_file() else others).append(rel)
    return sorted(files), sorted(links), sorted(others)


def _bundle_files(folder: Path) -> list[str]:
    """The bundle's regular files but the manifest, sorted."""
    return [rel for rel in _scan(folder)[0] if rel != MANIFEST]


def write_manifest(folder: Path) -> Path:
    """MANIFEST.sha256 in `sha256sum` format (`<hex>  <relative path>`), every other file, sorted."""
    lines = [f"{sha256_file(folder / rel)}  {rel}\n" for rel in _bundle_files(folder)]
    (folder / MANIFEST).write_text("".join(lines), encoding="utf-8")
    return folder / MANIFEST


def verify(folder: Path) -> list[str]:
    """Problems with the bundle, one line each naming the file; empty when every file matches its manifest line,
    none is missing or extra, the manifest lists something, the files every bundle has (ALWAYS) are there, and
    nothing in the folder is a symbolic link (to a file or a folder) or other than a regular file or folder."""
    if not folder.is_dir():
        return [f"{folder}: no such bundle folder"]
    files, links, others = _scan(folder)
    problems = [f"{printable(rel)}: symbolic link, refused (a bundle holds its files themselves)" for rel in links]
    problems += [f"{printable(rel)}: not a regular file" for rel in others]
    if MANIFEST not in files:
        return problems if MANIFEST in links else [*problems, f"{MANIFEST}: missing"]
    listed: dict[str, str] = {}
    for n, line in enumerate((folder / MANIFEST).read_text(encoding="utf-8", errors="replace").splitlines(),
                             start=1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            problems.append(f"{MANIFEST} line {n}: not '<sha256>  <path>'")
            continue
        rel = rel.removeprefix("*")
        if rel in listed:
            problems.append(f"{printable(rel)}: listed twice in {MANIFEST}")
        listed[rel] = digest
    if not listed:
        problems.append(f"{MANIFEST}: lists no file")
    present = set(files) - {MANIFEST}
    for rel, digest in sorted(listed.items()):
        if rel in links:
            continue                                        # refused above
        if rel not in present:
            problems.append(f"{printable(rel)}: missing")
        elif sha256_file(folder / rel) != digest:
            problems.append(f"{printable(rel)}: content changed (sha256 does not match {MANIFEST})")
    for rel in ALWAYS:
        if rel not in listed and rel not in present and rel not in links:
            problems.append(f"{rel}: missing (every bundle has it)")
    for rel in sorted(present - set(listed)):
        problems.append(f"{printable(rel)}: extra file, not in {MANIFEST}")
    return problems


def zip_path(folder: Path) -> Path:
    """Where `export --zip` writes DIR.zip: beside DIR, never inside it, named after DIR as an absolute path with
    `.` and `..` worked out (not following links): for `--out .` it is ../NAME.zip, NAME the current folder's
    name. ValueError for a folder without a name (the root)."""
    absolute = Path(os.path.abspath(folder))
    if not absolute.name:
        raise ValueError(f"{folder}: a folder without a name; DIR.zip is written beside DIR")
    return absolute.with_name(absolute.name + ".zip")


def zip_bundle(folder: Path) -> Path:
    """DIR.zip beside DIR (zip_path) with the bundle's files under DIR's name (fixed timestamps, so the same bundle
    gives the same zip), written whole or not at all."""
    target = zip_path(folder)
    name = target.name.removesuffix(".zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in [*_bundle_files(folder), MANIFEST]:
            info = zipfile.ZipInfo(f"{name}/{rel}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, (folder / rel).read_bytes())
    write_bytes(target, buf.getvalue())
    return target
