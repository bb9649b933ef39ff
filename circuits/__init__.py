"""Mechanistic interpretability for sequential recommenders: attention-only transformers, trained and taken apart.

Notebook API (the commands are thin wrappers over these):

    from circuits import load_dataset, load_run, evaluate_run, metrics_table
    ds = load_dataset()                      # built-in synthetic journeys, or a path / MovieLens folder
    run = load_run("runs/syn-L2")            # model (eval mode), config, vocab with titles, epochs, metrics
    metrics_table(evaluate_run(run))         # validation + test, every protocol, with baselines

Packages: `data` (logs → sequences), `training`, `scoring` (metrics, baselines, evaluation), `interp` (the
interpretability library), `report` (HTML); `model`, `config`, `runs`; the top-level modules `train`,
`evaluate`, `decompose`, `pairs`, `heads`, `synthetic` are the commands (`python -m circuits.NAME`).
"""

from circuits.config import ModelConfig, TrainConfig
from circuits.data import SequenceDataset, load_dataset
from circuits.model import AttnOnlyTransformer, build_model
from circuits.runs import Run, load_run
from circuits.scoring.evaluator import evaluate_model, evaluate_run, metrics_table
from circuits.training.loop import train as train_model

# names of version 0.1, kept for notebooks written against it
full_report = evaluate_model
report_table = metrics_table

__all__ = [
    "AttnOnlyTransformer",
    "ModelConfig",
    "Run",
    "SequenceDataset",
    "TrainConfig",
    "build_model",
    "evaluate_model",
    "evaluate_run",
    "full_report",
    "load_dataset",
    "load_run",
    "metrics_table",
    "report_table",
    "train_model",
]
