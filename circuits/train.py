"""`python -m circuits.train`: train a 0/1/2/…-layer attention-only recommender into a run directory."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from circuits.config import ATTENTION_KINDS, DISTANCE_BUCKETS, TIME_BUCKETS, ModelConfig
from circuits.data.cli_args import add_data_arguments, data_record, dataset_from_args
from circuits.errors import ArgumentParser, UserError, run_cli
from circuits.runs import check_data, partial_dir

DEFAULT_N_CTX = 200


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m circuits.train",
        description="Train an attention-only transformer (no LayerNorm, no biases) for next-item prediction; "
        "the checkpoint is chosen on validation NDCG@10 and evaluated on validation and test.",
    )
    p.add_argument("--layers", type=int, default=2, help="number of attention layers, 0 or more (default 2)")
    add_data_arguments(p)
    r = p.add_argument_group("run directory")
    r.add_argument("--out", help="run directory (default runs/<data>-L<layers>-<date-time>)")
    r.add_argument("--resume", action="store_true", help="continue the unfinished run --out (its .partial folder)")
    r.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    m = p.add_argument_group("model")
    m.add_argument("--heads", type=int, default=2, help="attention heads per layer (default 2)")
    m.add_argument("--d-model", type=int, default=64, help="residual width (default 64)")
    m.add_argument("--d-head", type=int, default=32, help="per-head width (default 32)")
    m.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX,
                   help=f"most recent items the model sees (default {DEFAULT_N_CTX}, capped at the longest sequence)")
    m.add_argument("--no-pos", action="store_true", help="no positional embedding")
    m.add_argument("--tied", action="store_true", help="tie the unembedding to the embedding (W_U = W_Eᵀ)")
    m.add_argument("--attention", choices=ATTENTION_KINDS, default="learned",
                   help="learned (QK, default); static (no QK: a learned weight per head and log-spaced bucket of "
                   "query–key distance and/or time gap, see --static-over); uniform (equal weight on every visible item)")
    m.add_argument("--static-over", choices=("distance", "time", "both"),
                   help="with --attention static: what the weights depend on: position distance (0, 1, 2–3, 4–7, … "
                   "items back; the default), time gap (self, < 1 s, [1, 2) s, [2, 4) s, …, from the log's timestamps "
                   "in seconds) or both (summed scores)")
    m.add_argument("--dropout", type=float, default=0.2, help="dropout on embeddings and head outputs (default 0.2)")
    t = p.add_argument_group("training")
    from circuits.training import TrainConfig

    d = TrainConfig()
    t.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum epochs (default {d.epochs})")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help=f"sequences per batch (default {d.batch_size})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"(default {d.weight_decay})")
    t.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"linear lr warm-up (default {d.warmup_steps})")
    t.add_argument("--negatives", type=int, default=d.negatives,
                   help="0 = full softmax; K = sampled softmax with K shared negatives and log-Q correction; "
                        "-1 = auto: full softmax up to 2,048 items, else 512 (default)")
    t.add_argument("--sampling", default=d.sampling, choices=["uniform", "popularity"], help="negative distribution")
    t.add_argument("--patience", type=int, default=d.patience, help=f"early stopping patience in epochs (default {d.patience})")
    t.add_argument("--decay-patience", type=int, default=d.decay_patience,
                   help=f"multiply the lr by --decay-factor after this many epochs without a better validation "
                        f"NDCG@10 (0 = constant lr; default {d.decay_patience})")
    t.add_argument("--decay-factor", type=float, default=d.decay_factor, help=f"(default {d.decay_factor})")
    t.add_argument("--max-minutes", type=float, default=d.max_minutes, help="stop after this much training time (0 = none)")
    t.add_argument("--snapshot-minutes", type=float, nargs="*", default=[],
                   help="also keep the best-on-validation weights as of these training times, e.g. 10 30 "
                        "(snapshots/best@10min.safetensors), for learning curves")
    t.add_argument("--seen-policy", default=d.seen_policy, choices=["auto", "excluded", "included"],
                   help="seen-item policy of the validation metric that selects the checkpoint (auto: excluded "
                        "unless users repeat items)")
    t.add_argument("--seed", type=int, default=d.seed, help=f"model and training seed (default {d.seed})")
    return p


def static_buckets(attention: str, over: str | None) -> dict[str, int]:
    """`--static-over` → the ModelConfig bucket counts (none of them for learned or uniform attention)."""
    if over is None:
        return {}
    if attention != "static":
        raise UserError("--static-over goes with --attention static")
    return {"distance_buckets": DISTANCE_BUCKETS if over in ("distance", "both") else 0,
            "time_buckets": TIME_BUCKETS if over in ("time", "both") else 0}


def main(argv: list[str] | None = None) -> int:
    from circuits.evaluation import report_table
    from circuits.training import TrainConfig, train

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.resume:
        if not args.out:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        return _resume(Path(args.out), args.quiet)
    if args.layers < 0:
        raise UserError(f"--layers must be 0 or more, got {args.layers}")
    name = Path(args.data).name if args.data else "data"
    out = Path(args.out or f"runs/{name}-L{args.layers}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists (use --overwrite, or another --out)")
    if partial_dir(out).exists():
        if not args.overwrite:
            raise UserError(f"{partial_dir(out)} holds an unfinished run (use --resume to continue it, or --overwrite)")
        import shutil

        shutil.rmtree(partial_dir(out))
    cfg_fields = {f.name for f in fields(TrainConfig)}
    train_cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in cfg_fields})
    ds = dataset_from_args(args)
    n_ctx = max(1, min(args.n_ctx, int(ds.lengths.max()) - 1))
    try:
        model_cfg = ModelConfig(
            d_vocab=ds.d_vocab, n_ctx=n_ctx, n_layers=args.layers, n_heads=args.heads, d_model=args.d_model,
            d_head=args.d_head, positional=not args.no_pos, tied=args.tied, dropout=args.dropout,
            attention=args.attention, **static_buckets(args.attention, args.static_over),
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    print(f"data: {ds.name}: {ds.n_users} users, {ds.n_items} items, {len(ds.items)} interactions; n_ctx {n_ctx}",
          file=sys.stderr)
    record = {"data": data_record(args), "argv": ["python", "-m", "circuits.train", *argv]}
    try:
        train(ds, model_cfg, train_cfg, out, record, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"interrupted; the last finished epoch is kept: python -m circuits.train --resume --out {out}",
              file=sys.stderr)
        return 130
    _print_summary(out, report_table)
    return 0


def _resume(out: Path, quiet: bool) -> int:
    from circuits.data import load_dataset
    from circuits.evaluation import report_table
    from circuits.training import TrainConfig, train

    part = partial_dir(out)
    if not (part / "state.pt").exists():
        raise UserError(f"nothing to resume: {part / 'state.pt'} not found")
    config = json.loads((part / "config.json").read_text())
    ds = load_dataset(config["data"]["source"], **config["data"]["options"])
    check_data(config, part, ds)
    train(ds, ModelConfig.from_dict(config["model"]), TrainConfig.from_dict(config["train"]), out,
          {"data": config["data"]}, resume=True, progress=not quiet)
    _print_summary(out, report_table)
    return 0


def _print_summary(out: Path, report_table) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    tr = metrics["training"]
    print(f"run: {out}  (best epoch {tr['best_epoch']} of {tr['epochs_run']}, stopped by {tr['stopped_by']}, "
          f"{tr['minutes']:.1f} min; checkpoint chosen on {tr['selection']})")
    table = report_table(metrics)
    print(table[table["split"] == "valid"].drop(columns="split").to_string(index=False, float_format="%.4f"))
    print(f"test split and @1/5/20: python -m circuits.evaluate {out}")


if __name__ == "__main__":
    run_cli(main)
