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

# every name is imported on first use (PEP 562): `python -m circuits.NAME --help` must not pay for torch and
# TransformerLens, which `import circuits` would otherwise import before the command's module even runs
_NAMES = {  # name → (module, attribute)
    "ModelConfig": ("circuits.config", "ModelConfig"), "TrainConfig": ("circuits.config", "TrainConfig"),
    "SequenceDataset": ("circuits.data", "SequenceDataset"), "load_dataset": ("circuits.data", "load_dataset"),
    "AttnOnlyTransformer": ("circuits.model", "AttnOnlyTransformer"), "build_model": ("circuits.model", "build_model"),
    "Run": ("circuits.runs", "Run"), "load_run": ("circuits.runs", "load_run"),
    "evaluate_model": ("circuits.scoring.evaluator", "evaluate_model"),
    "evaluate_run": ("circuits.scoring.evaluator", "evaluate_run"),
    "metrics_table": ("circuits.scoring.evaluator", "metrics_table"),
    "train_model": ("circuits.training.loop", "train"),
    # names of version 0.1, kept for notebooks written against it
    "full_report": ("circuits.scoring.evaluator", "evaluate_model"),
    "report_table": ("circuits.scoring.evaluator", "metrics_table"),
}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'circuits' has no attribute {name!r}")
    import importlib

    module, attribute = _NAMES[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__():
    return sorted(set(globals()) | set(_NAMES))


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
