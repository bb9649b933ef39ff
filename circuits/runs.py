"""Self-describing run directories, written atomically.

A run lives in `RUN.partial/` while it trains (holding `state.pt` for `--resume`) and is renamed to `RUN/`
only once complete, so a directory without the `.partial` suffix is always a finished run:

    config.json         model config (rebuilds the model), train config, data spec + fingerprint
    argv.json           the command line
    vocab.tsv           index, item_id, title, train_count (index 0 = padding)
    model.safetensors   weights of the epoch with the best validation NDCG@10
    epochs.csv          per-epoch loss, validation metrics and wall time
    metrics.json        final metrics: validation and test, every protocol and policy, and the baselines
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from circuits.config import ModelConfig
from circuits.errors import UserError
from circuits.model import AttnOnlyTransformer

PARTIAL = ".partial"


def partial_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + PARTIAL)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def save_weights(model: AttnOnlyTransformer, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


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

    def dataset(self):
        """The run's dataset, rebuilt from the recorded data spec and checked against its fingerprint."""
        from circuits.data import load_dataset

        data = self.config["data"]
        ds = load_dataset(data["source"], **data["options"])
        check_matches(self, ds)
        return ds


def check_matches(run: "Run", ds) -> None:
    check_data(run.config, run.path, ds)


def check_data(config: dict, where: Path, ds) -> None:
    """The data must be what the run (finished or partial, described by its config.json) was trained on."""
    want = config["data"]["fingerprint"]
    if ds.fingerprint != want or ds.d_vocab != config["model"]["d_vocab"]:
        raise UserError(
            f"checkpoint {where} does not match the data: it was trained on {config['data']['summary']['items']}"
            f" items (fingerprint {want}), the data has {ds.n_items} items (fingerprint {ds.fingerprint})"
        )


def load_run(path: str | Path) -> Run:
    path = Path(path).expanduser()
    if not path.exists():
        if partial_dir(path).exists():
            raise UserError(f"run {path} is unfinished ({partial_dir(path).name} exists); continue it with --resume")
        raise UserError(f"run directory not found: {path}")
    try:
        config = json.loads((path / "config.json").read_text())
        cfg = ModelConfig.from_dict(config["model"])
        model = AttnOnlyTransformer(cfg)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not a complete run directory: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    model.eval()
    vocab = pd.read_csv(path / "vocab.tsv", sep="\t", dtype={"item_id": str, "title": str}, keep_default_na=False)
    epochs = pd.read_csv(path / "epochs.csv") if (path / "epochs.csv").exists() else pd.DataFrame()
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
    return Run(path, model, config, vocab, epochs, metrics)


def save_state(
    path: Path, model, optimizer, epoch: int, best: dict, history: list[dict], elapsed: float, **extra
) -> None:
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
