"""Run from outside the source tree with only the installed wheel on the path (see smoke_installed.sh)."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

root, site = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
modules = sorted(
    ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    for package in ("circuits", "analyses") for p in (root / package).rglob("*.py")
)
for name in modules:
    module = importlib.import_module(name)
    where = Path(module.__file__).resolve()
    assert where.is_relative_to(site), f"{name} was imported from {where}, not from the installed wheel"
print(f"{len(modules)} modules imported from the installed wheel")

env = {**os.environ, "CIRCUITS_CACHE": str(Path.cwd() / "cache")}
commands = ["circuits.train", "circuits.evaluate", "circuits.decompose", "circuits.pairs", "circuits.heads",
            "circuits.report", "circuits.synthetic", "circuits.embed", "analyses.order", "analyses.translation",
            "analyses.same_item", "analyses.diagnostics", "analyses.depth", "analyses.causal",
            "analyses.dag_logits"]
for command in commands:
    subprocess.run([sys.executable, "-m", command, "--help"], check=True, env=env, capture_output=True)
tiny = ["--n-topics", "2", "--docs-per-topic", "6", "--series-per-topic", "1", "--n-users", "40", "--min-length", "6",
        "--max-length", "10"]
steps = [["circuits.synthetic", "--out", "data", *tiny],
         ["circuits.train", "--data", "data", "--layers", "1", "--epochs", "1", "--d-model", "8", "--d-head", "4",
          "--out", "run", "--quiet"],
         ["circuits.decompose", "run", "--all", "--out", "ranks.parquet"],
         ["circuits.report", "run", "--out", "run.html", "--quiet"],
         ["analyses.causal", "run", "--clusters", "3", "--iterations", "200", "--out", "causal", "--quiet"],
         ["analyses.dag_logits", "causal", "run", "--fit-windows", "8"],
         ["circuits.report", "run", "--causal", "causal", "--out", "run-causal.html", "--quiet"],
         ["circuits.synthetic", "--preset", "planted", "--out", "planted", "--n-users", "60"],
         # the text path: the packaged MiniLM (hash-checked, offline), a hybrid model over a catalogue pool
         # with held-out documents, faiss retrieval, the near-duplicate analysis
         ["circuits.embed", "data", "--out", "emb.parquet", "--quiet"],
         ["circuits.train", "--data", "data", "--layers", "1", "--epochs", "1", "--d-model", "8", "--d-head", "4",
          "--embed", "hybrid", "--unembed", "text", "--embeddings", "emb.parquet", "--pool", "catalogue",
          "--cold-items", "0.2", "--out", "text-run", "--quiet"],
         ["circuits.evaluate", "text-run", "--faiss"],
         ["circuits.decompose", "text-run", "--all", "--out", "text-ranks.parquet"],
         ["analyses.same_item", "text-run", "--out", "same-item"],
         ["circuits.report", "text-run", "--out", "text-run.html", "--quiet"]]
for step in steps:
    subprocess.run([sys.executable, "-m", *step], check=True, env=env, stdout=subprocess.DEVNULL)
print(f"every command's --help and tiny synthetic → train → decompose → report pipelines (id, and text with "
      f"embed → evaluate --faiss) ran from {site}")
