"""Self-describing run directories, written atomically.

A run lives in `RUN.partial/` while it trains (holding `state.pt` for `--resume`) and is renamed to `RUN/`
only once complete, so a directory without the `.partial` suffix is always a finished run:

    config.json         model config (rebuilds the model), train config, data spec + fingerprint
    argv.json           the command line
    vocab.tsv           index, item_id, title, train_count (index 0 = padding)
    model.safetensors   weights of the epoch with the best validation NDCG@10
    epochs.csv          per-epoch loss, validation metrics and wall time
    metrics.json        final metrics: validation and test, every protocol and policy, and the baselines

Portable: the data's path is recorded relative to the run directory (a run copied together with its data
still finds it) and absolute (a run moved alone still finds it); where neither holds, every command that
reads a run takes `--data PATH` (and `--items PATH`), checked against the recorded fingerprint.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from circuits.config import ModelConfig
from circuits.errors import UserError

if TYPE_CHECKING:  # torch, pandas and the model are imported where used: `--help` of the train command needs none
    import pandas as pd

    from circuits.model import AttnOnlyTransformer

PARTIAL = ".partial"


def partial_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + PARTIAL)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def save_weights(model: AttnOnlyTransformer, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def data_record(source: str, options: dict, run_dir: Path) -> dict:
    """What config.json records to rebuild a run's dataset: `source` ('synthetic', or the log's path relative
    to the run directory) and `source_absolute`, the reading `options` for `load_dataset` (the item metadata
    path in them relative too, with `items_absolute` beside)."""
    from circuits.data import DEFAULT_DATA

    base = Path(run_dir).expanduser().resolve()
    record: dict = {"source": source, "options": dict(options)}
    if source != DEFAULT_DATA:
        path = Path(source).expanduser().resolve()
        record.update(source=os.path.relpath(path, base), source_absolute=str(path))
    if options.get("items"):
        path = Path(options["items"]).expanduser().resolve()
        record["options"]["items"] = os.path.relpath(path, base)
        record["items_absolute"] = str(path)
    return record


def _locate(run_path: Path, recorded: str, absolute: str | None, what: str, flag: str) -> str:
    """The first of (recorded path, relative paths taken from the run directory; the absolute path) that exists."""
    # from the resolved run directory (as data_record took it: symlinks followed), then lexically, as
    # os.path.relpath wrote it: the run directory itself need not exist yet (a resumed run)
    candidates = [Path(os.path.normpath(Path(run_path).expanduser().resolve() / recorded))]
    if absolute:
        candidates.append(Path(absolute))
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    raise UserError(f"the {what} of run {run_path} is not where it was recorded ({' or '.join(map(str, candidates))});"
                    f" give its current place with {flag} PATH")


def data_source(config: dict, run_path: Path, data: str | None = None) -> str:
    """'synthetic', or the path of a run's log: `data` when given, else where config.json recorded it."""
    from circuits.data import DEFAULT_DATA

    rec = config["data"]
    if data is not None:
        return data
    if rec["source"] == DEFAULT_DATA:
        return DEFAULT_DATA
    return _locate(run_path, rec["source"], rec.get("source_absolute"), "data", "--data")


def recorded_dataset(config: dict, run_path: Path, data: str | None = None, items: str | None = None):
    """A run's dataset, rebuilt with its recorded reading options from `data` (default: where the run recorded
    it) and `items` (its item metadata file; likewise), and checked against the recorded fingerprint."""
    from circuits.data import load_dataset

    rec = config["data"]
    source = data_source(config, run_path, data)
    options = dict(rec["options"])
    if items is not None:
        options["items"] = items
    elif options.get("items"):
        options["items"] = _locate(run_path, options["items"], rec.get("items_absolute"), "item metadata", "--items")
    ds = load_dataset(source, **options)
    check_data(config, run_path, ds)
    return ds


def finish(run_dir: Path) -> None:
    """Atomically publish a partial run directory as complete."""
    part = partial_dir(run_dir)
    state = part / "state.pt"
    if state.exists():
        state.unlink()
    if run_dir.exists():  # only reachable with --overwrite, checked at start
        shutil.rmtree(run_dir)
    os.replace(part, run_dir)


@dataclass
class Run:
    """A finished run loaded back: model (eval mode), configs, vocabulary, metrics."""

    path: Path
    model: AttnOnlyTransformer
    config: dict
    vocab: pd.DataFrame
    epochs: pd.DataFrame
    metrics: dict

    @property
    def model_config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def seen_policy(self) -> str:
        """The seen-item policy its checkpoint was chosen under ("excluded" or "included")."""
        return self.config["train"].get("resolved_seen_policy", "excluded")

    def data_source(self, data: str | None = None) -> str:
        """'synthetic', or the path of the run's log: `data` when given, else where the run recorded it."""
        return data_source(self.config, self.path, data)

    def dataset(self, data: str | None = None, items: str | None = None):
        """The run's dataset (see `recorded_dataset`), checked against the run's fingerprint."""
        return recorded_dataset(self.config, self.path, data, items)

    def check_data(self, ds) -> None:
        """The data must be what this run was trained on (same fingerprint and vocabulary size)."""
        check_data(self.config, self.path, ds)


def check_data(config: dict, where: Path, ds) -> None:
    """The data must be what the run (finished or partial, described by its config.json) was trained on."""
    want = config["data"]["fingerprint"]
    if ds.fingerprint != want or ds.d_vocab != config["model"]["d_vocab"]:
        raise UserError(
            f"checkpoint {where} does not match the data: it was trained on {config['data']['summary']['items']}"
            f" items (fingerprint {want}), the data has {ds.n_items} items (fingerprint {ds.fingerprint})"
        )


RUN_FILES = ("config.json", "vocab.tsv", "model.safetensors", "epochs.csv", "metrics.json")


def _run_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        if partial_dir(path).exists():
            raise UserError(f"run {path} is unfinished ({partial_dir(path).name} exists); continue it with --resume")
        raise UserError(f"run directory not found: {path}")
    return path


def _incomplete(path: Path, e: Exception) -> UserError:
    return UserError(f"{path} is not a complete run directory: {type(e).__name__}: {str(e).splitlines()[0][:200]}")


def load_run(path: str | Path) -> Run:
    import pandas as pd
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from circuits.model import AttnOnlyTransformer

    path = _run_path(path)
    try:
        config = json.loads((path / "config.json").read_text())
        cfg = ModelConfig.from_dict(config["model"])
        model = AttnOnlyTransformer(cfg)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        vocab = pd.read_csv(path / "vocab.tsv", sep="\t", dtype={"item_id": str, "title": str}, keep_default_na=False)
        epochs = pd.read_csv(path / "epochs.csv")
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as e:
        raise _incomplete(path, e) from None
    model.eval()
    return Run(path, model, config, vocab, epochs, metrics)


def load_run_numpy(path: str | Path):
    """`(path, config, NumpyModel)`: a finished run's config and weights without torch (`circuits.model_numpy`),
    for the one-sequence decomposition from the shell. The errors of `load_run`: a missing or unfinished run, and
    for a run whose files are missing or unreadable or whose weights do not fit its config, "not a complete run
    directory" (vocab.tsv and epochs.csv are only required to exist: the view reads neither)."""
    from safetensors import SafetensorError

    from circuits.model_numpy import NumpyModel

    path = _run_path(path)
    try:
        for name in RUN_FILES:
            if not (path / name).is_file():
                raise FileNotFoundError(f"no {name} in {path}")
        config = json.loads((path / "config.json").read_text())
        model = NumpyModel.load(ModelConfig.from_dict(config["model"]), path / "model.safetensors")
        json.loads((path / "metrics.json").read_text())
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as e:
        raise _incomplete(path, e) from None
    return path, config, model


def save_state(
    path: Path, model, optimizer, epoch: int, best: dict, history: list[dict], elapsed: float, **extra
) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "best": best,
            "history": history,
            "elapsed": elapsed,
            "torch_rng": torch.get_rng_state(),
            **extra,
        },
        tmp,
    )
    os.replace(tmp, path)
