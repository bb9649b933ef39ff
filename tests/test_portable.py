"""A run directory copied elsewhere, its data moved elsewhere again: every command that reads a run works
with --data (and --items), and without it says so in one line."""

import shutil

import pytest

from analyses import order, same_item, translation
from circuits import decompose, evaluate, heads, pairs
from circuits.errors import UserError
from circuits.report import __main__ as report
from circuits.runs import load_run
from tests.helpers import interrupt_at_second_epoch, tiny_journeys, train_tiny


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """(copied run, where its log is now, where its item file is now): trained from a log file and an explicit
    item metadata file, then the run copied to another folder and the data moved to a third."""
    root = tmp_path_factory.mktemp("portable")
    folder = tiny_journeys(root / "a" / "data", n_users=60, max_length=12)
    run = train_tiny(folder / "interactions.tsv.gz", root / "a" / "run", 1, "--items", str(folder / "items.tsv"))
    shutil.copytree(run, root / "b" / "copied-run")
    shutil.move(folder, root / "c" / "moved-data")
    shutil.rmtree(root / "a")
    data = root / "c" / "moved-data"
    return root / "b" / "copied-run", data / "interactions.tsv.gz", data / "items.tsv"


def test_every_command_reads_a_moved_run_with_data_and_items(moved, tmp_path, capsys):
    run, log, items = (str(p) for p in moved)
    where = ["--data", log, "--items", items]
    user = load_run(run).dataset(log, items).user_ids[0]
    assert evaluate.main([run, *where, "--json"]) == 0
    assert decompose.main([run, "--seq-id", str(user), *where]) == 0
    assert decompose.main([run, "--all", "--out", str(tmp_path / "ranks.parquet"), *where]) == 0
    assert pairs.main([run, "--circuit", "OV:L0H1", *where]) == 0
    assert heads.main([run, *where]) == 0
    assert report.main([run, "--out", str(tmp_path / "r.html"), "--quiet", *where]) == 0
    for analysis in (order, translation, same_item):
        assert analysis.main([run, "--out", str(tmp_path / analysis.__name__), *where]) == 0
    out = capsys.readouterr().out
    assert "Chess" in out or "Astronomy" in out or "Baking" in out  # titles came from the moved item file


def test_without_data_a_moved_run_says_where_to_point(moved):
    run, log, _ = moved
    with pytest.raises(UserError, match="not where it was recorded.*--data PATH"):
        load_run(run).dataset()
    with pytest.raises(UserError, match="item metadata .* not where it was recorded.*--items PATH"):
        load_run(run).dataset(str(log))


def test_a_run_copied_together_with_its_data_finds_it_by_the_relative_path(moved, tmp_path):
    run, log, items = moved
    shutil.copytree(run, tmp_path / "x" / "run")
    shutil.copytree(log.parent, tmp_path / "x" / "data")
    # recorded relative to the run: ../data/… as the run was trained next to its data
    ds = load_run(tmp_path / "x" / "run").dataset()
    assert ds.n_users == 60


def test_an_interrupted_run_resumes_from_moved_data(tmp_path, monkeypatch):
    import circuits.training.loop as loop
    from circuits import train

    folder = tiny_journeys(tmp_path / "data", n_users=40, max_length=10)
    real_validate = interrupt_at_second_epoch(monkeypatch)
    assert train_tiny(folder, tmp_path / "run", 0) and (tmp_path / "run.partial" / "state.pt").exists()
    monkeypatch.setattr(loop, "validate", real_validate)
    shutil.move(folder, tmp_path / "elsewhere")
    with pytest.raises(UserError, match="--data PATH"):
        train.main(["--resume", "--out", str(tmp_path / "run"), "--quiet"])
    assert train.main(["--resume", "--out", str(tmp_path / "run"), "--quiet", "--data", str(tmp_path / "elsewhere")]) == 0
    assert load_run(tmp_path / "run").dataset(str(tmp_path / "elsewhere")).n_users == 40


def test_the_relative_path_holds_through_a_symlinked_run_folder(tmp_path):
    from circuits.runs import data_record, data_source

    (tmp_path / "real" / "deep" / "runs").mkdir(parents=True)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "runs").symlink_to(tmp_path / "real" / "deep" / "runs")
    log = tmp_path / "proj" / "data" / "log.csv"
    log.parent.mkdir()
    log.write_text("user_id,item_id,timestamp\n")
    run_dir = tmp_path / "proj" / "runs" / "r"
    record = data_record(str(log), {}, run_dir)
    del record["source_absolute"]  # only the relative path left
    assert data_source({"data": record}, run_dir) == str(log.resolve())
