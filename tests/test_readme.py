"""CI runs exactly the README's quick-start commands (so a missing install step fails CI)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_quick_start_verbatim():
    quick = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)
    assert len(commands) == 2
    ci = ROOT.joinpath(".ci", "run").read_text().splitlines()
    for command in commands:
        assert command.strip() in ci
