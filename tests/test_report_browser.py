"""report.html as a reader sees it: Debian's headless Chromium at 1400 px (tests/chromium_cdp.py) on the session's
report of sample_logs/. The postmortem's sections are there, no table shows a header without rows, and no word
(an address, a hash, a header) is broken across two lines."""
from __future__ import annotations

import os

import pytest

from chromium_cdp import Chromium, find_chromium

SECTIONS = ["summary", "impact", "root-cause", "detection", "timeline", "resolution", "leads", "response",
            "action-items", "lessons", "incidents", "cost", "reconciliation", "detector", "coverage",
            "recommendations", "appendix"]

# every word of the rendered page whose characters land on more than one line (pre blocks scroll instead)
BROKEN_WORDS = """(() => {
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    if (node.parentElement.closest('pre, style, script')) continue;
    const word = /\\S+/g;
    let m;
    while ((m = word.exec(node.data))) {
      const r = document.createRange();
      r.setStart(node, m.index);
      r.setEnd(node, m.index + m[0].length);
      const tops = new Set(Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => Math.round(x.top)));
      if (tops.size > 1) bad.push(m[0]);
    }
  }
  return bad;
})()"""

EMPTY_TABLES = """Array.from(document.querySelectorAll('table'))
  .filter(t => t.tHead && (!t.tBodies.length || !t.tBodies[0].rows.length))
  .map(t => (t.closest('.scroll') || t).previousElementSibling?.textContent || '(untitled)')"""


@pytest.mark.integration
def test_report_at_1400px_has_the_sections_no_empty_table_and_no_broken_word(sample_report):
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs the Debian package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    html = sample_report[1] / "report.html"
    with Chromium(chromium) as page:
        page.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1000, "deviceScaleFactor": 1,
                                                          "mobile": False})
        page.goto(html.as_uri())
        assert page.evaluate("window.innerWidth") == 1400
        present = page.evaluate("Array.from(document.querySelectorAll('[id]')).map(e => e.id)")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2, summary')).map(h => h.textContent)")
        empty = page.evaluate(EMPTY_TABLES)
        broken = page.evaluate(BROKEN_WORDS)
        appendix_open = page.evaluate("document.getElementById('appendix').open")
        timeline_rows = page.evaluate("document.querySelectorAll('#timeline tbody tr').length")
    assert [s for s in SECTIONS if s not in present] == []
    assert {"Impact", "Root cause and trigger", "Detection", "Response timeline", "Resolution", "Action items",
            "Lessons"} <= set(headings)
    assert empty == []
    assert broken == [], broken[:20]
    assert appendix_open is False                  # the hashes and the SQL are one click away, not on the page
    assert timeline_rows >= 6
