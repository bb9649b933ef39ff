"""Every config field is reachable from its command's flags, and every flag lands in its own field."""

from dataclasses import fields

import pytest

from circuits import synthetic, train
from circuits.config import ModelConfig, TrainConfig
from circuits.data.synthetic import SyntheticConfig
from circuits.errors import UserError


def nondefault(f) -> tuple[list[str], object]:
    """(flag arguments, the value the field must then hold), different from the field's default."""
    meta = f.metadata
    flag = meta.get("flags", ("--" + f.name.replace("_", "-"),))[0]
    if meta.get("action") in ("store_true", "store_false"):
        return [flag], not f.default
    if "choices" in meta:
        value = next(c for c in meta["choices"] if c != f.default)
        return [flag, value], value
    if meta.get("nargs") == "*":
        return [flag, "1.5", "7"], (1.5, 7.0)
    value = f.default + 3 if isinstance(f.default, int) else round(f.default + 0.05, 6)
    return [flag, str(value)], value


def test_every_model_and_train_field_is_set_by_its_flag():
    parser = train.build_parser()
    for cls in (ModelConfig, TrainConfig):
        for f in fields(cls):
            if "help" not in f.metadata:
                continue
            argv, want = nondefault(f)
            model_cfg, train_cfg = train.configs_from_args(parser.parse_args(argv), d_vocab=50, longest=1000,
                                                           d_text=4)
            got = getattr(model_cfg if cls is ModelConfig else train_cfg, f.name)
            assert got == want, f"{' '.join(argv)} set {cls.__name__}.{f.name} to {got!r}, not {want!r}"


def test_the_fields_without_a_flag_of_their_own_are_derived():
    """d_vocab from the data, n_ctx capped by it, the bucket counts and the static bias from --static-over, d_text
    from the text embeddings (text sides only): each reaches its field."""
    parser = train.build_parser()
    no_flag = {f.name for f in fields(ModelConfig) if "help" not in f.metadata}
    assert no_flag == {"d_vocab", "distance_buckets", "time_buckets", "static_bias", "d_text"}
    for argv, d_text in ((["--embed", "text"], 9), (["--unembed", "hybrid"], 9), ([], 0)):
        model_cfg, _ = train.configs_from_args(parser.parse_args(argv), d_vocab=77, longest=40, d_text=9)
        assert model_cfg.d_text == d_text
    with pytest.raises(UserError, match="go with --embed or --unembed"):
        train.configs_from_args(parser.parse_args(["--embeddings", "minilm"]), d_vocab=77, longest=40)
    model_cfg, _ = train.configs_from_args(parser.parse_args(["--n-ctx", "300"]), d_vocab=77, longest=40)
    # the default: learned attention plus a time-gap bias
    assert (model_cfg.d_vocab, model_cfg.n_ctx, model_cfg.distance_buckets, model_cfg.time_buckets) == (77, 39, 0, 32)
    assert model_cfg.static_bias and model_cfg.uses_time and model_cfg.attention_label == "learned + time bias"
    model_cfg, _ = train.configs_from_args(parser.parse_args(["--layers", "0"]), d_vocab=77, longest=40)
    assert not model_cfg.static_bias and not model_cfg.uses_time  # no heads, no bias
    model_cfg, _ = train.configs_from_args(parser.parse_args(["--attention", "static"]), d_vocab=77, longest=40)
    assert (model_cfg.distance_buckets, model_cfg.time_buckets, model_cfg.static_bias) == (12, 0, False)
    for over, buckets in (("distance", (12, 0)), ("time", (0, 32)), ("both", (12, 32))):
        args = parser.parse_args(["--attention", "static", "--static-over", over])
        model_cfg, _ = train.configs_from_args(args, d_vocab=77, longest=40)
        assert (model_cfg.distance_buckets, model_cfg.time_buckets, model_cfg.static_bias) == (*buckets, False)
        args = parser.parse_args(["--attention", "learned", "--static-over", over])  # QK + a static bias
        model_cfg, _ = train.configs_from_args(args, d_vocab=77, longest=40)
        assert (model_cfg.distance_buckets, model_cfg.time_buckets, model_cfg.static_bias) == (*buckets, True)
    args = parser.parse_args(["--attention", "learned", "--static-over", "none"])  # QK alone
    model_cfg, _ = train.configs_from_args(args, d_vocab=77, longest=40)
    assert not model_cfg.static_bias and not model_cfg.uses_time and model_cfg.attention_label == "learned"
    with pytest.raises(UserError, match="--static-over goes with --attention static or learned"):
        train.configs_from_args(parser.parse_args(["--attention", "uniform", "--static-over", "time"]), d_vocab=77,
                                longest=40)


def test_every_train_flag_is_a_config_field_or_a_data_or_run_option():
    other = {"data", "format", "user_col", "item_col", "time_col", "items", "title_col", "kcore", "tie_break",
             "data_seed", "pool", "cold_items", "cold_seed", "engine", "out", "resume", "overwrite", "quiet", "static_over",
             "embeddings", "text_cols", "help"}
    config_fields = {f.name for cls in (ModelConfig, TrainConfig) for f in fields(cls)}
    dests = {a.dest for a in train.build_parser()._actions}
    assert dests - config_fields - other == set()
    assert {f.name for cls in (ModelConfig, TrainConfig) for f in fields(cls) if "help" in f.metadata} <= dests


def test_every_synthetic_field_is_set_by_its_flag():
    parser = synthetic.build_parser()
    from circuits.cli import config_from_args

    for f in fields(SyntheticConfig):
        argv, want = nondefault(f)
        got = getattr(config_from_args(SyntheticConfig, parser.parse_args(["--out", "x", *argv])), f.name)
        assert got == want, f"{' '.join(argv)} set {f.name} to {got!r}"


def test_a_run_from_before_a_field_resumes_with_that_versions_behaviour():
    """`TrainConfig.from_dict` (what --resume reads): a config.json without `windows`, `min_delta`, `min_lr` (written
    before they existed) keeps the old behaviour (last window, no minimum gain, no floor), not today's defaults;
    a config that has them keeps its values."""
    from circuits.config import TrainConfig

    old = TrainConfig.from_dict({"epochs": 7, "lr": 0.01})
    assert (old.windows, old.min_delta, old.min_lr, old.epochs, old.lr) == ("last", 0.0, 0.0, 7, 0.01)
    new = TrainConfig.from_dict({"windows": "all", "min_delta": 1e-4, "min_lr": 1e-4})
    assert (new.windows, new.min_delta, new.min_lr) == ("all", 1e-4, 1e-4)
    assert TrainConfig().windows == "all" and TrainConfig().min_delta == 1e-4
    assert old.loss_seen == "included" and TrainConfig().loss_seen == "auto"


def test_loss_seen_auto_resolves_to_excluded_only_for_a_full_softmax_under_the_excluded_policy():
    from circuits.config import AUTO_FULL_SOFTMAX_MAX_ITEMS, TrainConfig

    small, large = 3_416, AUTO_FULL_SOFTMAX_MAX_ITEMS + 1
    auto = TrainConfig()
    assert auto.resolved_loss_seen("excluded", small) == "excluded"
    assert auto.resolved_loss_seen("included", small) == "included"
    assert auto.resolved_loss_seen("excluded", large) == "included"  # 512 sampled negatives there
    assert TrainConfig(negatives=8).resolved_loss_seen("excluded", small) == "included"
    assert TrainConfig(in_batch=True).resolved_loss_seen("excluded", small) == "included"
    assert TrainConfig(negatives=0).resolved_loss_seen("excluded", large) == "excluded"
    for explicit in ("included", "excluded"):  # an explicit choice is kept (the trainer refuses what cannot be)
        assert TrainConfig(loss_seen=explicit).resolved_loss_seen("included", large) == explicit
