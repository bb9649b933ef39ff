import pandas as pd

from circuits.data import load_dataset
from circuits.data.synthetic import SyntheticConfig, generate, load_ground_truth, write

SMALL = SyntheticConfig(n_topics=5, docs_per_topic=12, series_per_topic=2, n_users=200, min_length=10, max_length=30)


def test_every_row_is_explained_by_its_mechanism():
    log, cat, truth = generate(SMALL)
    topic = dict(zip(cat["item_id"], cat["topic"]))
    pairs = {tuple(p) for p in truth["series_pairs"]}
    seen_mechs = set()
    for user, rows in log.groupby("user_id", sort=False):
        items, mechs = rows["item_id"].tolist(), rows["mechanism"].tolist()
        assert rows["timestamp"].is_monotonic_increasing
        mine = set(truth["user_topics"][user])
        for t, (item, mech) in enumerate(zip(items, mechs)):
            seen_mechs.add(mech)
            prev = items[t - 1] if t else None
            if mech == "start":
                assert t == 0
            elif mech == "repeat":
                assert item == prev
            elif mech == "series":
                assert (prev, item) in pairs
            elif mech == "revisit":
                assert item in items[: t - 2] and item != prev
            elif mech == "induction":
                assert mechs[t - 1] in ("revisit", "induction")  # a replay starts at a revisit and may go on
                j = max(j for j in range(t - 2) if items[j] == prev)  # most recent earlier occurrence
                assert items[j + 1] == item
            elif mech == "jump":
                assert topic[item] not in mine
            else:
                assert mech == "topic" and topic[item] in mine
    assert seen_mechs == {"start", "repeat", "series", "revisit", "induction", "jump", "topic"}
    assert truth["mechanisms"] == log["mechanism"].value_counts().to_dict() | {
        m: 0 for m in truth["mechanisms"] if m not in set(log["mechanism"])
    }


def test_series_are_directional_and_titles_unique():
    _, cat, truth = generate(SMALL)
    pairs = {tuple(p) for p in truth["series_pairs"]}
    assert pairs and not any((b, a) in pairs for a, b in pairs)
    assert cat["title"].is_unique


def test_deterministic_by_seed():
    a, _, _ = generate(SMALL)
    b, _, _ = generate(SMALL)
    c, _, _ = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 1}))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_session_timestamps_minutes_within_days_between():
    log, _, _ = generate(SMALL)
    gaps = log.groupby("user_id")["timestamp"].diff().dropna()
    assert (gaps < 3600).mean() > 0.7 and (gaps > 86400 / 4).mean() > 0.05


def test_written_folder_reads_through_the_normal_pipeline(tmp_path):
    out = write(SMALL, tmp_path / "journeys")
    ds = load_dataset(str(out))
    truth = load_ground_truth(out)
    assert ds.n_users == SMALL.n_users and ds.has_repeats
    assert sum(truth["mechanisms"].values()) == len(ds.items)
    assert ds.titles[1].startswith(("Astronomy", "Baking", "Chess", "Cycling", "Databases"))
