"""Randomized deployments: drawn deterministically, every option reachable, every writer's files load losslessly,
and the default simulation still writes exactly the bytes it wrote before deployments existed."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forensics.api import Case
from forensics.simulate import SCENARIOS, Deployment, draw_deployment, simulate
from forensics.simulate import deployment as dep_mod
from forensics.simulate import nginx_writer, randomized
from forensics.simulate.matrix import draws
from forensics.sources.interface import LoadOptions

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LOGS = ROOT / "sample_logs"
# sha256 over "<path> <sha256 of the file>" lines of `simulate provider_key_outside_proxy_second_key --seed 2`, as
# written before deployments were added (a different code path from sample_logs': provider-only calls, no nginx noise)
OUTSIDE_SEED2_DIGEST = "326fbb43f9ae588e2bedf799a1ce41d72ada5de7a7be35239a4639353cdc019c"


def tree_digest(folder: Path) -> str:
    lines = [f"{p.relative_to(folder)} {hashlib.sha256(p.read_bytes()).hexdigest()}"
             for p in sorted(folder.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# --- drawing ----------------------------------------------------------------------------------------------------

def test_a_draw_is_the_same_for_the_same_seed_and_scenario():
    for seed in range(50):
        for scenario in SCENARIOS:
            a, b = draw_deployment(seed, scenario), draw_deployment(seed, scenario)
            assert a == b and hash(a) == hash(b)
            assert Deployment.from_dict(json.loads(json.dumps(a.describe()))) == a
    assert len({draw_deployment(s, "open_proxy") for s in range(50)}) == 50
    assert [d.deployment for d in draws(20, 7)] == [d.deployment for d in draws(20, 7)]


def test_200_draws_cover_every_option_and_respect_each_scenario():
    seen = defaultdict(set)
    for d in draws(200, 0):
        dep, scenario = d.deployment, d.scenario
        for field in ("sources", "keys", "litellm_sink", "object_store", "nginx_format", "nginx_timezone",
                      "nginx_rotation", "providers", "openai_usage_bucket", "anthropic_usage_bucket", "behind_lb"):
            seen[field].add(getattr(dep, field))
        seen["history"].add(dep_mod.history_bucket(dep.history_s))
        seen["nginx_in_path without its log"].add(dep.nginx_in_path if "nginx" not in dep.sources else None)
        # the shape of a deployment: a source's fields are set exactly when the source is present
        assert dep.sources in dep_mod.SOURCE_SETS
        assert (dep.litellm_sink is not None) == ("litellm" in dep.sources)
        assert (dep.object_store is not None) == (dep.litellm_sink == "object_per_file")
        assert (dep.nginx_format is not None) == ("nginx" in dep.sources) == (dep.nginx_timezone is not None)
        assert dep.nginx_in_path or "nginx" not in dep.sources
        assert bool(dep.providers) == ("provider" in dep.sources)
        for p in dep_mod.PROVIDERS:
            assert (dep.usage_bucket(p) is not None) == (p in dep.providers)
        assert dep_mod.HISTORY_RANGE_S[0] <= dep.history_s <= dep_mod.HISTORY_RANGE_S[1]
        assert dep_mod.MIN_TAIL_S <= dep.tail_s <= dep_mod.MAX_TAIL_S
        if dep.nginx_format == "custom":
            assert dep.nginx_log_format.startswith("log_format custom_")
        elif dep.nginx_format:
            assert dep.nginx_log_format == nginx_writer.LOG_FORMATS[dep.nginx_format]
        # what the scenario needs to make sense
        if scenario in ("leaked_virtual_key", "key_stuffing"):
            assert dep.keys
        if scenario.startswith("provider_key_outside_proxy"):
            assert "openai" in dep.providers
        if scenario == "leaked_virtual_key":
            assert {"litellm", "nginx"} & set(dep.sources)
        if dep.sources == ("provider",) and scenario in dep_mod.ATTACKS_ON_OPENAI:
            assert "openai" in dep.providers
    assert seen["sources"] == set(dep_mod.SOURCE_SETS)
    assert seen["keys"] == seen["behind_lb"] == {True, False}
    assert seen["litellm_sink"] == set(dep_mod.LITELLM_SINKS) | {None}
    assert seen["object_store"] == set(dep_mod.OBJECT_STORES) | {None}
    assert seen["nginx_format"] == set(dep_mod.NGINX_FORMATS) | {None}
    assert seen["nginx_timezone"] == set(dep_mod.TIMEZONES) | {None}
    assert seen["nginx_rotation"] == set(dep_mod.NGINX_ROTATIONS) | {None}
    assert seen["providers"] == {(), ("openai",), ("anthropic",), ("openai", "anthropic")}
    assert seen["openai_usage_bucket"] == seen["anthropic_usage_bucket"] == set(dep_mod.BUCKETS) | {None}
    assert seen["history"] == {"<1h", "1h-1d", "1d-7d", "7d-30d"}
    assert seen["nginx_in_path without its log"] == {True, False, None}


# --- every writer loads losslessly ------------------------------------------------------------------------------

def _dep(**kw) -> Deployment:
    base = dict(sources=("litellm", "nginx", "provider"), keys=True, history_s=3 * 3600, incident_position=0.8,
                behind_lb=True, nginx_in_path=True, litellm_sink="spend_logs_csv", object_store=None,
                nginx_format="json", nginx_log_format=nginx_writer.LOG_FORMATS["json"], nginx_timezone="Europe/Berlin",
                nginx_rotation="daily", providers=("openai", "anthropic"), openai_usage_bucket="1h",
                anthropic_usage_bucket="1h")
    base |= kw
    if base["nginx_format"] and "nginx_log_format" not in kw:
        base["nginx_log_format"] = nginx_writer.LOG_FORMATS.get(base["nginx_format"])
    return Deployment(**base)


CUSTOM = dep_mod.custom_log_format(np.random.default_rng(12))
# five hand-picked deployments, every sink and the unusual nginx shapes between them (default tier)
CHOSEN = [
    ("open_proxy", 1, _dep(nginx_format="custom", nginx_log_format=CUSTOM, keys=False, openai_usage_bucket="1m",
                           nginx_timezone="America/St_Johns", nginx_rotation="weekly", history_s=36 * 3600)),
    ("key_stuffing", 2, _dep(litellm_sink="spend_logs_json", nginx_format="json_default", behind_lb=False,
                             nginx_timezone="Asia/Kathmandu", anthropic_usage_bucket="1m")),
    ("leaked_virtual_key", 3, _dep(sources=("litellm", "nginx"), litellm_sink="callback_ndjson",
                                   nginx_format="ingress", nginx_rotation="none", providers=(),
                                   openai_usage_bucket=None, anthropic_usage_bucket=None, history_s=9 * 86400)),
    ("baseline", 4, _dep(litellm_sink="object_per_file", object_store="s3", nginx_format="timings", keys=False,
                         history_s=900, incident_position=0.99, nginx_timezone="Australia/Adelaide")),
    ("provider_key_outside_proxy", 5, _dep(sources=("provider",), litellm_sink=None, nginx_format=None,
                                           nginx_log_format=None, nginx_timezone=None, nginx_rotation=None,
                                           nginx_in_path=False, openai_usage_bucket="1m",
                                           anthropic_usage_bucket="1d", history_s=20 * 86400)),
]


def _drawn(n: int) -> list[tuple[str, int, Deployment]]:
    """n drawn deployments; an object tree only for the baseline (a file per request: minutes for an incident)."""
    out, seed = [], 1000
    while len(out) < n:
        scenario = SCENARIOS[seed % len(SCENARIOS)]
        dep = draw_deployment(seed, scenario)
        if dep.litellm_sink != "object_per_file" or scenario == "baseline":
            out.append((scenario, seed, dep))
        seed += 1
    return out


def load_and_check(tmp_path: Path, scenario: str, seed: int, dep: Deployment) -> None:
    truth = simulate(scenario, tmp_path / "logs", seed=seed, deployment=dep)
    options = LoadOptions(nginx_format=dep.nginx_log_format if dep.nginx_format == "custom" else None)
    with Case.memory(options) as case:
        reports = case.ingest([tmp_path / "logs"])
        assert sorted(str(Path(r.path).relative_to(tmp_path / "logs")) for r in reports) == sorted(truth["files"])
        for r in reports:
            rel = str(Path(r.path).relative_to(tmp_path / "logs"))
            assert r.status == "loaded" and r.quarantined == 0 and r.records == r.loaded, (rel, r)
            if rel.startswith(("litellm/", "nginx/")):
                assert r.records == truth["records"][rel], rel
            family = rel.split("/")[0]
            assert r.format.startswith({"openai": "openai.", "anthropic": "anthropic."}.get(family, family)), rel
            if dep.nginx_format and rel.startswith("nginx/"):
                assert r.format == f"nginx.{dep.nginx_format}" or (
                    dep.nginx_format == "json_default" and r.format == "nginx.json"), (rel, r.format)
        if "litellm" in dep.sources:
            (n,) = case.execute("SELECT count(*) FROM llm_requests").fetchone()
            assert n == truth["totals"]["litellm_records"]
        if "nginx" in dep.sources:
            (n,) = case.execute("SELECT count(*) FROM http_requests").fetchone()
            assert n == truth["totals"]["nginx_lines"]
        check_seen_by(case, truth, dep)


def check_seen_by(case: Case, truth: dict, dep: Deployment) -> None:
    """The truth's `seen_by` agrees with what the loaded case shows of each incident."""
    for inc in truth["incidents"]:
        seen = inc["seen_by"]
        assert set(seen) <= set(dep.sources)
        if "litellm" in seen:
            ids = inc["request_ids"]
            assert len(ids) == seen["litellm"]["requests"] > 0
            clients = {c for (c,) in case.execute(
                "SELECT DISTINCT client_ip FROM llm_requests WHERE request_id IN (SELECT unnest(?::VARCHAR[]))",
                [ids]).fetchall()}
            assert clients == set(seen["litellm"]["client_ips"]), (clients ^ set(seen["litellm"]["client_ips"]))
        else:
            assert inc["request_ids"] == []
        if "nginx" in dep.sources and inc["attacker_ips"]:
            shown = {c for (c,) in case.execute("SELECT DISTINCT client_ip FROM http_requests").fetchall()}
            assert set(seen["nginx"]["client_ips"]) <= shown
            if not set(seen["nginx"]["client_ips"]) & set(inc["attacker_ips"]):   # behind a balancer, no XFF
                assert not shown & set(inc["attacker_ips"])
        if inc["verdict"] == "attack":
            assert set(inc["observable_attacker_ips"]) <= set(inc["attacker_ips"])


@pytest.mark.slow
@pytest.mark.parametrize("scenario, seed, dep", CHOSEN, ids=[c[0] for c in CHOSEN])
def test_chosen_deployments_load_losslessly(tmp_path, scenario, seed, dep):
    load_and_check(tmp_path, scenario, seed, dep)


@pytest.mark.slow
@pytest.mark.parametrize("scenario, seed, dep", _drawn(15), ids=lambda v: str(v)[:40] if isinstance(v, str) else None)
def test_drawn_deployments_load_losslessly(tmp_path, scenario, seed, dep):
    load_and_check(tmp_path, scenario, seed, dep)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", dep_mod.NGINX_FORMATS)
@pytest.mark.parametrize("behind_lb", [True, False])
def test_every_nginx_format_loads_with_and_without_a_balancer(tmp_path, fmt, behind_lb):
    directive = CUSTOM if fmt == "custom" else nginx_writer.LOG_FORMATS[fmt]
    load_and_check(tmp_path, "open_proxy", 6, _dep(sources=("nginx",), litellm_sink=None, providers=(),
                                                   openai_usage_bucket=None, anthropic_usage_bucket=None,
                                                   nginx_format=fmt, nginx_log_format=directive,
                                                   behind_lb=behind_lb, history_s=1800, nginx_rotation="none"))


@pytest.mark.slow
@pytest.mark.parametrize("store", dep_mod.OBJECT_STORES)
def test_object_trees_load(tmp_path, store):
    load_and_check(tmp_path, "baseline", 8, _dep(litellm_sink="object_per_file", object_store=store, history_s=2400,
                                                 incident_position=0.9, keys=store == "gcs"))


def _custom_formats(n: int) -> list[str]:
    rng = np.random.default_rng(2024)
    return [dep_mod.custom_log_format(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def events():
    built = randomized.build("open_proxy", 9, _dep(history_s=1200, behind_lb=True))
    ev = pd.concat([nginx_writer.from_requests(built.frame), built.events[nginx_writer.EVENT_COLUMNS]],
                   ignore_index=True)
    special = [ev[ev["xff"].str.contains(",")].head(20), ev[ev["request"].str.startswith("\x16")].head(3),
               ev[ev["request"] == ""].head(3), ev[ev["ua"].str.contains('"')].head(3)]
    return pd.concat([ev.head(150), *special], ignore_index=True)


def _load_custom(tmp_path: Path, events: pd.DataFrame, directive: str) -> None:
    lines = nginx_writer.render(events, "custom", "America/St_Johns", directive)
    path = tmp_path / f"{directive.split()[1]}.log"
    path.write_bytes("".join(x + "\n" for x in lines).encode("latin-1"))
    with Case.memory(LoadOptions(nginx_format=directive)) as case:
        [r] = case.ingest([path])
        assert (r.format, r.records, r.loaded, r.quarantined) == ("nginx.custom", len(lines), len(lines), 0), \
            (directive, r.message)


@pytest.mark.parametrize("directive", _custom_formats(4))
def test_custom_log_formats_load_with_nginx_format(tmp_path, events, directive):
    _load_custom(tmp_path, events, directive)


@pytest.mark.slow
@pytest.mark.parametrize("directive", _custom_formats(30)[4:])
def test_more_custom_log_formats_load_with_nginx_format(tmp_path, events, directive):
    _load_custom(tmp_path, events, directive)


# --- the same bytes as before -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_default_simulation_is_unchanged(tmp_path):
    """`simulate --scenario open_proxy --seed 1` is sample_logs/ byte for byte, and another scenario and seed keep
    the digest they had before randomized deployments."""
    simulate("open_proxy", tmp_path / "open_proxy", seed=1)
    written = sorted(p.relative_to(tmp_path / "open_proxy") for p in (tmp_path / "open_proxy").rglob("*")
                     if p.is_file())
    # sample_logs/config/ is no simulator output: the seed's deployment configuration, for the audit
    assert written == sorted(p.relative_to(SAMPLE_LOGS) for p in SAMPLE_LOGS.rglob("*") if p.is_file()
                             and p.relative_to(SAMPLE_LOGS).parts[0] != "config")
    for rel in written:
        assert (tmp_path / "open_proxy" / rel).read_bytes() == (SAMPLE_LOGS / rel).read_bytes(), rel
    simulate("provider_key_outside_proxy_second_key", tmp_path / "outside", seed=2)
    assert tree_digest(tmp_path / "outside") == OUTSIDE_SEED2_DIGEST


def test_a_deployment_writes_the_same_bytes_twice(tmp_path):
    dep = CHOSEN[3][2]
    truths = [simulate("baseline", tmp_path / x, seed=4, deployment=dep) for x in "ab"]
    assert truths[0] == truths[1] and tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert truths[0]["deployment"] | {"rate_scale": None} == dep.describe() | {"rate_scale": None}
    assert truths[0]["sources"] == list(dep.sources)


def test_cli_randomize(tmp_path, capsys):
    from forensics.cli import main

    assert main(["simulate", "--scenario", "baseline", "--seed", "3", "--randomize", "--out", str(tmp_path)]) == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert Deployment.from_dict(truth["deployment"]) == draw_deployment(3, "baseline")
    assert "deployment: " in capsys.readouterr().out
    assert sorted(truth["files"]) == sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                                            if p.is_file() and p.name != "truth.json")


def test_open_proxy_without_keys_is_the_same_attack():
    """A keyless baseline: every request keyless, and the attack still keyless gpt-4 from new public addresses."""
    keyed = randomized.build("open_proxy", 11, _dep(keys=True))
    keyless = randomized.build("open_proxy", 11, _dep(keys=False))
    assert (keyless.frame["key"] == -1).all() and (keyless.frame["outcome"] != "auth").all()
    assert (keyed.frame["key"] >= 0).sum() > 0
    attack = keyless.frame[keyless.frame["incident"] == "INC-1"]
    same = keyed.frame[keyed.frame["incident"] == "INC-1"]
    assert len(attack) == len(same) > 1000
    assert set(attack["model"]) == {"gpt-4"} and set(attack["max_tokens"]) == {4000}
    assert not set(attack["client_ip"]) & set(keyless.frame.loc[keyless.frame["incident"] == "", "client_ip"])
    assert dataclasses.replace(_dep(keys=True), keys=False) == _dep(keys=False)
