"""The response notebooks on another case than sample_logs/: only the parameter cell changes (issue: pointing it at
another scenario's output works without edits elsewhere). nbval checks the committed outputs on sample_logs/; this
runs every notebook top to bottom on a leaked-key case and checks that each finishes and talks about that case."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def leaked_case(tmp_path_factory, simulated):
    """A folder with the notebooks' own outputs (cases/, bundle/) and logs/: the session's simulated leaked-key logs
    (seed 2, shared with the scenario tests)."""
    base = tmp_path_factory.mktemp("other_case")
    (base / "logs").symlink_to(simulated("leaked_virtual_key", 2).logs, target_is_directory=True)
    return base


def _with_parameters(nb, **values):
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.lstrip().startswith("# Parameters"))
    for name, value in values.items():
        cell.source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell.source, flags=re.M)
        assert n <= 1
    return nb


def _text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("0*.ipynb")))
def test_notebook_runs_on_a_leaked_key_case(leaked_case, name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    _with_parameters(nb, INPUT=str(leaked_case / "logs"), CASE_DIR=str(leaked_case / "cases"),
                     BUNDLE_DIR=str(leaked_case / "bundle"))
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = _text(nb)
    assert "unauthenticated_proxy" not in text           # nothing of sample_logs/ leaked into this case
    if name.startswith(("01", "02", "03", "06")):
        assert "leaked_key" in text
    assert len(list((leaked_case / "cases").glob("logs-*.duckdb"))) == 1     # one case for the input, reused
