"""Scoring: ranking metrics under both protocols (`metrics`), baselines (`baselines`), and a model next to
them on validation and test (`evaluator`)."""

from circuits.scoring.evaluator import evaluate_model, evaluate_run, metrics_table, model_scorer

__all__ = ["evaluate_model", "evaluate_run", "metrics_table", "model_scorer"]
