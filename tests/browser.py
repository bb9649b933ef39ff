"""Open an HTML file in headless Chromium and report what happened: JavaScript errors, alert() calls,
rendered plots, and every URL the browser fetched (from Chromium's own network log).

The page is copied with a small probe script put first in <head>: it records errors and alert calls,
and after load writes a JSON summary into the DOM, which `--dump-dom` returns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

PROBE = """<script>
window.__errors = []; window.__alerts = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.alert = m => window.__alerts.push(String(m));
document.addEventListener('securitypolicyviolation', e => window.__errors.push('CSP: ' + e.violatedDirective + ' ' + e.blockedURI));
window.addEventListener('load', () => setTimeout(() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const drawn = plots.filter(p => p.querySelector('svg.main-svg') && p.querySelectorAll('svg *').length > 20);
  const out = document.createElement('pre'); out.id = '__probe';
  out.textContent = JSON.stringify({errors: window.__errors, alerts: window.__alerts,
    figures: document.querySelectorAll('div[id^=fig]').length, plots: plots.length, drawn: drawn.length,
    images: document.images.length, scripts: document.scripts.length});
  document.body.appendChild(out);
}, 1500));
</script>"""

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def have_chromium() -> bool:
    """For a test whose browser part is optional: is there a browser? Where one is required
    (`CIRCUITS_REQUIRE_BROWSER`, as CI sets it) a missing browser fails the test instead, so CI can never pass
    by leaving the browser checks out."""
    import pytest

    if find_chromium() is None:
        if os.environ.get("CIRCUITS_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (CIRCUITS_REQUIRE_BROWSER) but not on PATH")
        return False
    return True


def require_chromium() -> None:
    """For a test that is nothing without a browser: skip it when there is none (fail where one is required)."""
    import pytest

    if not have_chromium():
        pytest.skip("Chromium not installed (Debian: apt-get install chromium); the browser tests need it")


def open_in_chromium(page: Path, work: Path, timeout: float = 120) -> dict:
    """Load `page` (a copy with the probe) → {errors, alerts, figures, plots, drawn, ..., requests}."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium on PATH")
    work.mkdir(parents=True, exist_ok=True)
    html = page.read_text(encoding="utf-8")
    probed = work / "probed.html"
    head = html.index("<head>") + len("<head>")
    probed.write_text(html[:head] + PROBE + html[head:], encoding="utf-8")
    netlog = work / "netlog.json"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run",
           "--disable-extensions", "--metrics-recording-only", "--disable-domain-reliability",
           f"--user-data-dir={work / 'profile'}", f"--log-net-log={netlog}", "--net-log-capture-mode=Default",
           "--virtual-time-budget=20000", "--dump-dom", probed.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "HOME": str(work)})
    dom = res.stdout
    start = dom.find('<pre id="__probe">')
    if start < 0:
        raise RuntimeError(f"the probe did not report (exit {res.returncode}): {res.stderr[-2000:]}")
    body = dom[start + len('<pre id="__probe">') : dom.index("</pre>", start)]
    import html as html_lib

    seen = json.loads(html_lib.unescape(body))
    seen["requests"] = requested_urls(netlog)
    return seen


def requested_urls(netlog: Path) -> list[str]:
    """URLs the page asked for, from Chromium's network log. Chromium's own background traffic (update
    checks, accounts) has no page origin as initiator ("not an origin") and is left out."""
    text = netlog.read_text(encoding="utf-8", errors="replace") if netlog.exists() else ""
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # Chromium may leave the log unterminated
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = set()
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event["type"] == start_job and params.get("initiator") != "not an origin" and "url" in params:
            urls.add(params["url"])
    return sorted(urls)
