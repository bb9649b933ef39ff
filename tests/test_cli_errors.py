"""One error path for every command: bad input is one `error: …` line on stderr, exit status 2, nothing written;
the same kind of problem gets the same status everywhere."""

import shutil
import subprocess
import sys

import pytest

from analyses import depth, diagnostics, order, same_item, translation
from circuits import decompose, evaluate, heads, pairs, synthetic, train
from circuits.cli import run_cli
from circuits.report import __main__ as report
from tests.helpers import tiny_journeys, train_tiny

RUN_READERS = [evaluate, decompose, pairs, heads, report, order, translation, same_item]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    folder = tiny_journeys(root / "data", n_users=50, max_length=12)
    return {layers: train_tiny(folder, root / f"L{layers}", layers) for layers in (0, 1)}


def one_line_error(main, argv, capsys) -> str:
    """Run a command as its `__main__` would; it must exit 2 with exactly one `error: …` line."""
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def extra(command, tmp_path) -> list[str]:
    if command is decompose:
        return ["--seq-id", "u00001"]
    return ["--out", str(tmp_path / "out")] if command in (order, translation, same_item) else []


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """Commands run in an empty folder (their default outputs, e.g. reports/, would land here)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("command", RUN_READERS, ids=lambda c: c.__name__)
def test_a_missing_or_incomplete_run_directory(command, runs, tmp_path, empty_cwd, capsys):
    assert "run directory not found" in one_line_error(command.main, [str(tmp_path / "nope"), *extra(command, tmp_path)],
                                                        capsys)
    broken = tmp_path / "broken"
    shutil.copytree(runs[1], broken)
    (broken / "vocab.tsv").unlink()
    assert "not a complete run directory" in one_line_error(command.main, [str(broken), *extra(command, tmp_path)],
                                                             capsys)
    assert not (tmp_path / "out").exists() and list(empty_cwd.iterdir()) == []


@pytest.mark.parametrize("command", [heads, translation, same_item], ids=lambda c: c.__name__)
def test_a_zero_layer_run_where_heads_are_needed_is_the_same_error_everywhere(command, runs, tmp_path, empty_cwd,
                                                                              capsys):
    assert "0-layer" in one_line_error(command.main, [str(runs[0]), *extra(command, tmp_path)], capsys)
    assert not (tmp_path / "out").exists() and list(empty_cwd.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--heads", "0"], "n_heads must be positive"),
    (["--dropout", "1.5"], "dropout must be in"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--layers", "x"], "invalid int value"),
    (["--attention", "rotary"], "invalid choice"),
])
def test_bad_training_flags(argv, message, tmp_path, capsys):
    assert message in one_line_error(train.main, [*argv, "--out", str(tmp_path / "r")], capsys)
    assert not any(tmp_path.iterdir())


def test_bad_arguments_of_every_other_command(runs, tmp_path, empty_cwd, capsys):
    run = str(runs[1])
    assert "unknown sequence id" in one_line_error(decompose.main, [run, "--seq-id", "nobody"], capsys)
    assert "unknown circuit" in one_line_error(pairs.main, [run, "--circuit", "XY:1"], capsys)
    assert "unknown sequence id" in one_line_error(report.main, [run, "--seq-ids", "nobody", "--out",
                                                                 str(tmp_path / "r.html")], capsys)
    assert "n_topics must be in" in one_line_error(synthetic.main, ["--out", str(tmp_path / "s"), "--n-topics", "99"],
                                                   capsys)
    assert "data not found" in one_line_error(diagnostics.main, [str(tmp_path / "none.csv")], capsys)
    assert "give a training budget" in one_line_error(depth.main, ["--max-minutes", "0", "--out", str(tmp_path / "d")],
                                                      capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"] and list(empty_cwd.iterdir()) == []


@pytest.mark.parametrize("module", ["circuits.synthetic", "circuits.data.synthetic"])
def test_the_data_generator_from_the_shell(module, tmp_path):
    """Both spellings of the generator's command go through the same error path (the second is the old one)."""
    proc = subprocess.run([sys.executable, "-m", module, "--out", str(tmp_path / "s"), "--p-repeat", "0.9"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: p_repeat + p_revisit + p_jump must be at most 1"]
    assert not (tmp_path / "s").exists()
