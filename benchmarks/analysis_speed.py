"""Benchmark: the analysis commands, wall time and peak memory from the shell, this tree against another revision.

    python benchmarks/analysis_speed.py --base 4c4bb50 --repeat 3 --ml1m-run runs/ml1m-L2 \\
        --large-run /tmp/scale-bench/run-100k-x1 --large-cache /tmp/scale-bench/cache-100k

Commands (each in its own process, as a user runs it):

    train --help                python -m circuits.train --help
    decompose --seq-id          python -m circuits.decompose ML1M_RUN --seq-id ID   (ID: --seq-id, default the first user)
    decompose --all             python -m circuits.decompose ML1M_RUN --all --out WORK/<tree>/ranks.parquet
    heads                       python -m circuits.heads ML1M_RUN
    report                      python -m circuits.report ML1M_RUN --quiet --out WORK/<tree>/report.html
    report --experiments        python -m circuits.report ML1M_RUN --experiments --quiet --out WORK/<tree>/exp.html
    pairs --top 100 (large)     python -m circuits.pairs LARGE_RUN --top 100   (CIRCUITS_CACHE=--large-cache)

With --base REV the revision is checked out into a git worktree (WORK/base-tree, removed at the end) and every
command runs in both trees, alternating (base, this, base, this …, command by command, so drifting machine load
hits both alike), --repeat rounds; the medians are shown. Wall seconds and the peak resident memory (ru_maxrss of
the child, from os.wait4) of each run; the ratio this / base per command; and whether both trees printed the same
(the output paths replaced; a report page compared without its build time). Without --base only this tree runs.
On a shared machine, read the ratios: absolute times move with whatever else is running.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, env: dict, out: Path) -> dict:
    """Run `cmd` in `cwd`; its stdout into `out`; wall seconds and the child's peak RSS (MB)."""
    t0 = time.perf_counter()
    with open(out, "w") as stdout:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=stdout, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed in {cwd}: {' '.join(cmd)}\n{err[-2000:]}")
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024}


def commands(args, py: str, out: Path) -> list[tuple[str, list[str], dict, list[Path]]]:
    """(name, command, environment, files it writes) for one tree whose outputs go to `out`."""
    r = str(args.ml1m_run)
    large_env = {"CIRCUITS_CACHE": str(args.large_cache)} if args.large_cache else {}
    large_data = ["--data", str(args.large_data)] if args.large_data else []
    return [
        ("train --help", [py, "-m", "circuits.train", "--help"], {}, []),
        ("decompose --seq-id", [py, "-m", "circuits.decompose", r, "--seq-id", args.seq_id], {}, []),
        ("decompose --all", [py, "-m", "circuits.decompose", r, "--all", "--out", str(out / "ranks.parquet")], {},
         [out / "ranks.parquet"]),
        ("heads", [py, "-m", "circuits.heads", r], {}, []),
        ("report", [py, "-m", "circuits.report", r, "--quiet", "--out", str(out / "report.html")], {},
         [out / "report.html"]),
        ("report --experiments", [py, "-m", "circuits.report", r, "--experiments", "--quiet", "--out",
                                  str(out / "exp.html")], {}, [out / "exp.html"]),
        ("pairs --top 100 (large)", [py, "-m", "circuits.pairs", str(args.large_run), "--top", "100", *large_data],
         large_env, []),
    ]


def normalised(text: str, out: Path) -> str:
    """A command's printed output or written page, comparable between trees: its output folder, the seconds a
    report took and a page's build time replaced."""
    text = text.replace(str(out), "OUT")
    text = re.sub(r"in [0-9.]+ s\n?$", "in N s", text)
    return re.sub(r"report built [0-9: -]+UTC", "report built T", text)


def same_outputs(names: list[str], outs: dict[str, Path]) -> dict[str, str]:
    """Per command: 'yes' when both trees printed (and wrote, for pages) the same, else what differed."""
    import pandas as pd

    verdict = {}
    for name in names:
        key = _slug(name)
        texts = {t: normalised((o / f"{key}.stdout").read_text(), o) for t, o in outs.items()}
        same = texts["base"] == texts["this"]
        what = [] if same else ["printed output"]
        if name.startswith("report"):
            page = "report.html" if name == "report" else "exp.html"
            pages = {t: normalised((o / page).read_text(encoding="utf-8"), o) for t, o in outs.items()}
            if pages["base"] != pages["this"]:
                what.append("page")
        if name == "decompose --all":
            a, b = (pd.read_parquet(o / "ranks.parquet") for o in (outs["base"], outs["this"]))
            ranks = int((a["rank"] != b["rank"]).sum())
            logit = float((a["target_logit"] - b["target_logit"]).abs().max())
            if ranks or logit:
                what.append(f"Parquet: {ranks} of {len(a):,} ranks, target_logit ≤ {logit:.1e}")
        verdict[name] = "yes" if not what else "differs: " + "; ".join(what)
    return verdict


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="the revision to compare against (e.g. 4c4bb50); default: this tree only")
    p.add_argument("--repeat", type=int, default=1, help="rounds of every command; medians shown (default 1)")
    p.add_argument("--ml1m-run", type=Path, required=True, help="a run directory (ML-1M, 2 layers)")
    p.add_argument("--seq-id", help="the user of decompose --seq-id (default: the run's first user)")
    p.add_argument("--large-run", type=Path, required=True, help="a run on a large catalogue (the 100k-item run)")
    p.add_argument("--large-data", type=Path, help="the large run's data, if not where the run recorded it")
    p.add_argument("--large-cache", type=Path, help="CIRCUITS_CACHE for the large run (its preprocessed data)")
    p.add_argument("--work", type=Path, default=Path("/tmp/analysis-speed"), help="outputs and the base worktree")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only the commands whose name starts with one of these")
    args = p.parse_args()
    py = sys.executable
    if args.seq_id is None:
        args.seq_id = subprocess.run([py, "-c", "import sys; from circuits.runs import load_run; "
                                      "print(load_run(sys.argv[1]).dataset().user_ids[0])", str(args.ml1m_run)],
                                     cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    trees = {"this": REPO}
    if args.base:
        trees = {"base": args.work / "base-tree", "this": REPO}
        subprocess.run(["git", "worktree", "add", "--detach", str(trees["base"]), args.base], cwd=REPO, check=True,
                       capture_output=True)
    outs = {t: args.work / f"out-{t}" for t in trees}
    for o in outs.values():
        o.mkdir()
    plan = {t: commands(args, py, outs[t]) for t in trees}
    names = [c[0] for c in plan["this"] if not args.only or any(c[0].startswith(x) for x in args.only)]
    results: dict[str, dict[str, list[dict]]] = {t: {n: [] for n in names} for t in trees}
    try:
        for round_ in range(args.repeat):
            for i, (name, *_rest) in enumerate(plan["this"]):
                if name not in names:
                    continue
                for tree, cwd in trees.items():  # alternating, command by command
                    _, cmd, env, _files = plan[tree][i]
                    r = run(cmd, cwd, env, outs[tree] / f"{_slug(name)}.stdout")
                    results[tree][name].append(r)
                    print(f"round {round_ + 1} {name} [{tree}]: {r['wall']:.2f} s, {r['rss_mb']:.0f} MB",
                          file=sys.stderr, flush=True)
        same = same_outputs(names, outs) if args.base else {}
    finally:
        if args.base:
            subprocess.run(["git", "worktree", "remove", "--force", str(trees["base"])], cwd=REPO, capture_output=True)

    def med(tree: str, name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[tree][name])

    import torch  # only for the version in the header

    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({os.uname().machine}), torch {torch.__version__}; "
          f"ML-1M run {args.ml1m_run}, user {args.seq_id}; large run {args.large_run}; "
          f"{'base ' + args.base + ', ' if args.base else ''}median of {args.repeat} round(s)"
          f"{', alternating' if args.base else ''}\n")
    if args.base:
        print("| command | base | this | this / base | base peak RSS | this peak RSS | same output |")
        print("|---|---|---|---|---|---|---|")
        for n in names:
            b, t = med("base", n, "wall"), med("this", n, "wall")
            print(f"| {n} | {b:.2f} s | {t:.2f} s | {t / b:.2f} | {med('base', n, 'rss_mb'):.0f} MB | "
                  f"{med('this', n, 'rss_mb'):.0f} MB | {same[n]} |")
    else:
        print("| command | wall | peak RSS |\n|---|---|---|")
        for n in names:
            print(f"| {n} | {med('this', n, 'wall'):.2f} s | {med('this', n, 'rss_mb'):.0f} MB |")


if __name__ == "__main__":
    main()
