"""Mechanistic interpretability for sequential recommenders: attention-only transformers, trained and taken apart.

Notebook API (the CLIs are thin wrappers over these):

    from circuits import load_dataset, load_run, evaluate_run
    ds = load_dataset()                      # built-in synthetic journeys, or a path / MovieLens folder
    run = load_run("runs/synthetic-L2-…")    # model (eval mode), config, vocab with titles, epochs, metrics
    report = evaluate_run(run)               # validation + test, every protocol, with baselines
"""

from circuits.config import ModelConfig
from circuits.data import SequenceDataset, load_dataset
from circuits.evaluation import evaluate_run, full_report, report_table
from circuits.model import AttnOnlyTransformer, build_model
from circuits.runs import Run, load_run
from circuits.training import TrainConfig
from circuits.training import train as train_model

__all__ = [
    "AttnOnlyTransformer",
    "ModelConfig",
    "Run",
    "SequenceDataset",
    "TrainConfig",
    "build_model",
    "evaluate_run",
    "full_report",
    "load_dataset",
    "load_run",
    "report_table",
    "train_model",
]
