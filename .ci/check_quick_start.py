"""The quick start's outputs exist and are whole: a finished run directory and a self-contained report."""

import json
import re
import sys
from pathlib import Path

run, report = Path(sys.argv[1]), Path(sys.argv[2])
expected = {"argv.json", "config.json", "epochs.csv", "metrics.json", "model.safetensors", "vocab.tsv"}
missing = expected - {p.name for p in run.iterdir()} if run.is_dir() else expected
assert not missing, f"{run}: missing {sorted(missing)}"
assert not Path(f"{run}.partial").exists(), f"{run}.partial left behind"
metrics = json.loads((run / "metrics.json").read_text())
ndcg = metrics["model"]["test"]["full/included"]["NDCG@10"]
assert 0 < ndcg <= 1, f"test NDCG@10 {ndcg}"
html = report.read_text(encoding="utf-8")
assert html.count("<section") >= 5 and "Rank by component" in html, f"{report}: sections missing"
# self-contained: no script or stylesheet loaded from elsewhere, and a policy that forbids fetching
# (plotly.js, inlined, merely mentions its CDN in its own source)
external = re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", html)
assert not external and "Content-Security-Policy" in html, f"{report}: not self-contained: {external[:3]}"
print(f"quick start ok: {run} (test NDCG@10 {ndcg:.4f}), {report} ({report.stat().st_size / 1e6:.1f} MB)")
