"""The production-sized generator (`circuits.data.production`) on tiny configs, and its command preset."""

import json
import math
import subprocess
import sys
from dataclasses import fields, replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from circuits import synthetic
from circuits.cli import config_from_args
from circuits.data import production
from circuits.data.production import (
    MECHANISMS,
    USER_LEVEL,
    ProductionConfig,
    _seed_key,
    _uniforms,
    catalogue,
    generate_production,
    journeys,
    length_mu,
)
from circuits.errors import UserError

TINY = ProductionConfig(n_docs=2_000, n_users=3_000, n_topics=20, mean_length=20.0, max_length=100,
                        users_per_chunk=1_000)


def read_log(folder):
    return pq.read_table(folder / "interactions").to_pandas()


def test_the_same_config_writes_byte_identical_files(tmp_path):
    a, b = generate_production(TINY, tmp_path / "a", progress=False), generate_production(TINY, tmp_path / "b",
                                                                                           progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["ground_truth.json", "interactions/part-00000.parquet",
                                       "interactions/part-00001.parquet", "interactions/part-00002.parquet",
                                       "items.parquet"]
    assert sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) == files
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    other_seed = generate_production(replace(TINY, seed=1), tmp_path / "c", progress=False)
    assert not read_log(other_seed).equals(read_log(a))


def test_the_chunk_size_changes_only_how_the_rows_are_split(tmp_path):
    """A user's journey is a function of the seed and the user id (counter-based draws), not of its chunk."""
    whole = generate_production(replace(TINY, users_per_chunk=3_000), tmp_path / "one", progress=False)
    split = generate_production(replace(TINY, users_per_chunk=700), tmp_path / "five", progress=False)
    assert len(list((whole / "interactions").iterdir())) == 1 and len(list((split / "interactions").iterdir())) == 5
    assert read_log(whole).equals(read_log(split))
    truth_whole, truth_split = (json.loads((f / "ground_truth.json").read_text()) for f in (whole, split))
    assert truth_whole["mechanisms"] == truth_split["mechanisms"]
    assert (whole / "items.parquet").read_bytes() == (split / "items.parquet").read_bytes()


def test_layout_types_counts_and_time_order(tmp_path):
    out = generate_production(TINY, tmp_path / "p", progress=False)
    truth = json.loads((out / "ground_truth.json").read_text())
    parts = sorted((out / "interactions").iterdir())
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == truth["rows_per_part"]
    assert truth["n_interactions"] == sum(truth["rows_per_part"]) == sum(truth["mechanisms"].values())
    assert truth["mechanisms"]["start"] == TINY.n_users and truth["config"] == json.loads(json.dumps(
        {f.name: getattr(TINY, f.name) for f in fields(TINY)}))
    for k, p in enumerate(parts):  # part k holds users k·1000 .. k·1000 + 999
        schema = pq.read_schema(p)
        assert [(f.name, str(f.type)) for f in schema] == [("user_id", "int64"), ("item_id", "int64"),
                                                           ("timestamp", "int64")]
        users = pq.read_table(p, columns=["user_id"]).column(0).to_numpy()
        assert users.min() == k * 1_000 and users.max() == k * 1_000 + 999
    log = read_log(out)
    assert len(log) == truth["n_interactions"]
    users = log["user_id"].to_numpy()
    assert (np.diff(users) >= 0).all() and np.array_equal(np.unique(users), np.arange(TINY.n_users))
    same_user = users[1:] == users[:-1]
    assert (np.diff(log["timestamp"].to_numpy())[same_user] > 0).all()  # strictly increasing within a user
    assert log["timestamp"].min() >= production.EPOCH
    assert log["item_id"].between(1, TINY.n_docs).all()
    lengths = log.groupby("user_id").size()
    assert lengths.min() >= TINY.min_length and lengths.max() <= TINY.max_length
    assert lengths.mean() == pytest.approx(TINY.mean_length, rel=0.05)

    items = pq.read_table(out / "items.parquet")
    assert [(f.name, str(f.type)) for f in items.schema] == [("item_id", "int64"), ("title", "string"),
                                                             ("text", "string"), ("topic", "int32")]
    items = items.to_pandas()
    assert items["item_id"].tolist() == list(range(1, TINY.n_docs + 1)) and items["title"].is_unique
    cat = catalogue(TINY)
    assert np.array_equal(items["topic"].to_numpy(), cat.topic_of[1:])
    assert not (tmp_path / "p.tmp").exists() and not (tmp_path / "p.old").exists()


def test_the_planted_successors(tmp_path):
    """Each topic's documents form one cycle of successors, and d → succ[d] makes up p_successor of the
    transitions (plus the little that other mechanisms hit by chance)."""
    cat = catalogue(TINY)
    docs = np.arange(1, TINY.n_docs + 1)
    succ = cat.successor[docs]
    assert sorted(succ) == list(docs) and (succ != docs).all()  # a permutation without fixed points
    assert (cat.topic_of[succ] == cat.topic_of[docs]).all()
    d, steps = 1, 1  # the cycle through document 1 runs through its whole topic
    while (d := cat.successor[d]) != 1:
        steps += 1
    assert steps == cat.sizes[cat.topic_of[1]]

    out = generate_production(TINY, tmp_path / "p", progress=False)
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["successor_pairs"] == [[str(a), str(b)] for a, b in zip(docs, succ)]
    log = read_log(out)
    users, items = log["user_id"].to_numpy(), log["item_id"].to_numpy()
    same_user = users[1:] == users[:-1]
    share = (items[1:] == cat.successor[items[:-1]])[same_user].mean()
    assert TINY.p_successor - 0.01 < share < TINY.p_successor + 0.02
    assert truth["mechanisms"]["successor"] / same_user.sum() == pytest.approx(TINY.p_successor, abs=0.01)


def test_popularity_follows_zipf(tmp_path):
    """Within a topic the rank-1 document takes log 2 / log(size + 1) of the topic draws (the continuous power law
    x^-1 on [1, size + 1), floored), and the rank-1 topic that share of the topics users follow; the log has a
    short head and a long tail."""
    cat = catalogue(TINY)
    rows = journeys(TINY, cat, 0, TINY.n_users)
    topic_draws = rows.item_id[rows.mechanism == MECHANISMS.index("topic")]
    rank_one = cat.members[cat.offsets[cat.topic_of[topic_draws]]]
    assert (topic_draws == rank_one).mean() == pytest.approx(math.log(2) / math.log(101), abs=0.01)
    first = rows.item_id[rows.mechanism == MECHANISMS.index("start")]  # a topic draw of a followed topic, one per user
    top_topic = (cat.topic_of[first] == cat.topic_by_popularity[0]).mean()
    assert top_topic == pytest.approx(math.log(2) / math.log(TINY.n_topics + 1), abs=0.03)

    log = read_log(generate_production(replace(TINY, n_docs=20_000, n_topics=200), tmp_path / "p", progress=False))
    counts = np.sort(np.bincount(log["item_id"], minlength=20_001)[1:])[::-1]
    assert counts[:200].sum() > 0.15 * counts.sum()  # the top 1% of documents
    assert (counts == 0).mean() > 0.3  # a long tail never read


def reference_journey(cfg: ProductionConfig, cat, user: int) -> tuple[list[int], list[int], list[str]]:
    """One user's journey, one step at a time in plain Python, from the same counter-based draws: (items,
    timestamps, mechanisms). An independent reading of the mechanisms, to check the vectorised steps against."""
    key, who = _seed_key(cfg.seed), np.array([user], dtype=np.uint64)

    def draw(position, purpose):
        a, b = _uniforms(key, who, position, purpose)
        return float(a[0]), float(b[0])

    def zipf(u, size, s):
        x = math.exp(u * math.log(size + 1)) if s == 1 else (1 + u * ((size + 1) ** (1 - s) - 1)) ** (1 / (1 - s))
        return min(max(int(x), 1), size)

    a, b = draw(USER_LEVEL, 0)
    normal = math.sqrt(-2 * math.log1p(-a)) * math.cos(2 * math.pi * b)
    length = min(cfg.max_length, cfg.min_length + int(min(math.exp(length_mu(cfg) + cfg.length_sigma * normal),
                                                          cfg.max_length)))
    a, b = draw(USER_LEVEL, 1)
    followed = [int(cat.topic_by_popularity[zipf(draw(USER_LEVEL, 2 + slot)[0], cfg.n_topics,
                                                 cfg.topic_zipf_exponent) - 1])
                for slot in range(1 + int(a * cfg.topics_per_user))]
    clock = production.EPOCH + int(b * production.START_SPREAD_S)
    items, times, mechs = [], [], []
    session_left, topic = 0, None
    for t in range(length):
        new_session = session_left == 0
        if new_session:
            a, b = draw(t, 2)
            session_left = 1 + math.floor(math.log1p(-a) / math.log1p(-1 / cfg.session_mean_length))
            topic = followed[int(b * len(followed))]
        session_left -= 1
        u_mech, u_revisit = draw(t, 0)
        u_rank, u_gap = draw(t, 1)
        if t:
            if new_session:
                clock += production.SESSION_GAP_MIN_S + math.floor(-production.SESSION_GAP_MEAN_S * math.log1p(-u_gap))
            else:
                clock += production.IN_SESSION_GAP_MIN_S + math.floor(
                    -production.IN_SESSION_GAP_MEAN_S * math.log1p(-u_gap))
        rank = zipf(u_rank, int(cat.sizes[topic]), cfg.zipf_exponent)
        topic_doc = int(cat.members[cat.offsets[topic] + rank - 1])
        if t == 0:
            mech, item = "start", topic_doc
        elif u_mech < cfg.p_successor:
            mech, item = "successor", int(cat.successor[items[-1]])
        elif u_mech < cfg.p_successor + cfg.p_repeat:
            mech, item = "repeat", items[-1]
        elif u_mech < cfg.p_successor + cfg.p_repeat + cfg.p_revisit and t >= 2:
            mech, item = "revisit", items[int(u_revisit * (t - 1))]
        else:
            mech, item = "topic", topic_doc
        items.append(item)
        times.append(clock)
        mechs.append(mech)
    return items, times, mechs


@pytest.mark.parametrize("cfg", [TINY, replace(TINY, zipf_exponent=0.8, topic_zipf_exponent=1.3, topics_per_user=1)])
def test_the_vectorised_steps_match_a_per_user_loop(cfg):
    cat = catalogue(cfg)
    rows = journeys(cfg, cat, 1_000, 200)
    seen = set()
    for user in range(1_000, 1_200):
        mine = rows.user_id == user
        items, times, mechs = reference_journey(cfg, cat, user)
        assert rows.item_id[mine].tolist() == items, user
        assert rows.timestamp[mine].tolist() == times, user
        assert [MECHANISMS[m] for m in rows.mechanism[mine]] == mechs, user
        seen.update(mechs)
    assert seen == set(MECHANISMS)


def test_the_output_is_replaced_atomically(tmp_path, monkeypatch):
    out = tmp_path / "p"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    generate_production(TINY, out, progress=False)
    assert not (out / "stale.txt").exists() and (out / "ground_truth.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = []

    def fail_on_the_second_part(path, rows):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return write_part(path, rows)

    write_part = production._write_part
    monkeypatch.setattr(production, "_write_part", fail_on_the_second_part)
    with pytest.raises(OSError, match="disk full"):
        generate_production(replace(TINY, seed=5), out, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the old data set, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # and no half-written folder


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="at least 2 documents per topic"):
        ProductionConfig(n_docs=10, n_topics=6)
    with pytest.raises(UserError, match="sum to at most 1"):
        ProductionConfig(p_successor=0.7, p_repeat=0.2, p_revisit=0.2)
    with pytest.raises(UserError, match="mean_length"):
        ProductionConfig(mean_length=600)


def test_every_production_field_is_set_by_its_flag():
    parser = synthetic.build_parser("production")
    for f in fields(ProductionConfig):
        flag = "--" + f.name.replace("_", "-")
        want = f.default + 1 if isinstance(f.default, int) else f.default / 2
        if f.name == "mean_length":
            want = 40.0
        got = getattr(config_from_args(ProductionConfig, parser.parse_args(["--out", "x", flag, str(want)])), f.name)
        assert got == want, f"{flag} {want} set {f.name} to {got!r}"


def test_the_command_with_both_presets(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        synthetic.main(["--help"])
    assert done.value.code == 0
    help_small = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    assert "--preset {small,production,planted}" in help_small and "--preset production --help" in help_small
    assert "--p-induction" in help_small and "--n-docs" not in help_small

    proc = subprocess.run([sys.executable, "-m", "circuits.synthetic", "--preset", "production", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert "ProductionConfig" in proc.stdout and "--n-docs" in proc.stdout and "--p-induction" not in proc.stdout

    out = tmp_path / "p"
    argv = ["--preset", "production", "--out", str(out), "--quiet", "--n-docs", "2000", "--n-users", "3000",
            "--n-topics", "20", "--mean-length", "20", "--max-length", "100", "--users-per-chunk", "1000"]
    assert synthetic.main(argv) == 0
    line = capsys.readouterr().out.strip()
    truth = json.loads((out / "ground_truth.json").read_text())
    assert line.startswith(f"wrote {out}: {truth['n_interactions']:,} interactions, 3,000 users, 2,000 documents, "
                           "3 parts in ")
    assert truth["config"] == json.loads(json.dumps({f.name: getattr(TINY, f.name) for f in fields(TINY)}))
    with pytest.raises(UserError, match="invalid choice"):
        synthetic.main(["--preset", "huge", "--out", str(tmp_path / "x")])
    with pytest.raises(UserError, match="unrecognized arguments: --p-induction"):
        synthetic.main(["--preset", "production", "--out", str(tmp_path / "x"), "--p-induction", "0.5"])
    assert not (tmp_path / "x").exists()
