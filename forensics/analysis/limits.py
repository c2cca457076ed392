"""The limits the case HAD: where nginx's error log shows limit_req / limit_conn rejecting (or, in dry-run mode,
flagging) requests, the deployment was not unprotected. The controls replay (controls.py) assumes no control was in
place; the report shows these beside it. SQL steps are named `controls_*` like the replay's."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from forensics.analysis.steps import Step
from forensics.analysis.timeline import has_error_log

if TYPE_CHECKING:
    from forensics.api import Case


def limits_seen_step() -> Step:
    """The limits nginx's error log shows in force over [?, ?): per directive and zone, the requests it rejected (or,
    in dry-run mode, would have; delayed ones under a burst), from when to when, from how many addresses."""
    return Step("controls_limits_seen", """
        SELECT CASE WHEN starts_with(class, 'limit_req') THEN 'limit_req' ELSE 'limit_conn' END AS directive,
               zone, CASE WHEN ends_with(class, '_dry_run') THEN 'dry run' WHEN ends_with(class, '_delayed')
                          THEN 'delayed' ELSE 'rejected' END AS effect,
               count(*) AS requests, count(DISTINCT client_ip) AS addresses, min(time) AS first, max(time) AS last
        FROM nginx_errors
        WHERE class IN ('limit_req', 'limit_conn', 'limit_req_dry_run', 'limit_conn_dry_run', 'limit_req_delayed')
          AND time >= ? AND time <= ?
        GROUP BY ALL ORDER BY directive, zone, effect
    """)


def limits_seen(case: Case, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
    """What limits the case HAD (nginx limit_req / limit_conn rejecting requests, from its error log) over the
    window (default: all of it); empty when the error log shows none, or there is no error log."""
    if not has_error_log(case):
        return pd.DataFrame(columns=["directive", "zone", "effect", "requests", "addresses", "first", "last"])
    return case.query(limits_seen_step(), [start or datetime(1, 1, 1), end or datetime(9999, 12, 31)])


def limits_text(limits: pd.DataFrame) -> list[str]:
    """One sentence per limit in force, for the report: the replay above assumes none was."""
    out = []
    for r in limits.itertuples():
        zone = f' zone "{r.zone}"' if isinstance(r.zone, str) else ""
        verb = {"rejected": "rejected", "dry run": "would have rejected (dry run)", "delayed": "delayed"}[r.effect]
        out.append(f"nginx {r.directive}{zone} was in force: it {verb} {int(r.requests):,} requests from "
                   f"{int(r.addresses):,} addresses between {r.first} and {r.last} UTC (error log).")
    return out
