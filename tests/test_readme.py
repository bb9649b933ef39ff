"""CI runs the README's quick-start commands, one per line, in order, under `set -e` (so a failing step fails CI)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_blocks() -> list[list[str]]:
    quick = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)\n```", quick, flags=re.DOTALL)]


def test_ci_runs_the_readme_quick_start_line_by_line_in_order():
    setup, tests = quick_start_blocks()[:2]
    ci = [line.strip() for line in ROOT.joinpath(".ci", "run").read_text().splitlines()]
    assert "set -euo pipefail" in ci[:6]
    positions = [ci.index(line) for line in setup + tests]  # ValueError: a README line CI does not run
    assert positions == sorted(positions), "CI runs the README's commands in another order"
    assert positions[: len(setup)] == list(range(positions[0], positions[0] + len(setup))), "set-up lines split"
    for line in setup + tests:
        assert "&&" not in line and "||" not in line, f"a chained command hides failures under set -e: {line}"
