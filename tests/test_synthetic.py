import difflib
from functools import cache

import pandas as pd

from circuits.data import load_dataset
from circuits.data.synthetic import SyntheticConfig, generate, load_ground_truth, write

SMALL = SyntheticConfig(n_topics=5, docs_per_topic=12, series_per_topic=2, n_users=200, min_length=10, max_length=30)


@cache
def default_data():
    """The default config's data (about 2 s), generated once for the tests that need its traffic."""
    return generate(SyntheticConfig())


def story_of(cat: pd.DataFrame) -> dict[str, str]:
    """item id → the id of its story (the original's, for a twin)."""
    return {d: o or d for d, o in zip(cat["item_id"], cat["duplicate_of"])}


def test_every_row_is_explained_by_its_mechanism():
    log, cat, truth = generate(SMALL)
    topic = dict(zip(cat["item_id"], cat["topic"]))
    story = story_of(cat)
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
            elif mech == "revisit":  # an earlier story, maybe under its other id
                assert story[item] in {story[i] for i in items[: t - 2]} and story[item] != story[prev]
            elif mech == "induction":
                assert mechs[t - 1] in ("revisit", "induction")  # a replay starts at a revisit and may go on
                j = max(j for j in range(t - 2) if items[j] == prev)  # most recent earlier occurrence, exact id
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


def test_duplicate_groups_are_retitled_twins_of_one_topic():
    _, cat, truth = generate(SMALL)
    row = cat.set_index("item_id")
    groups = truth["duplicate_groups"]
    standalone = (cat["series"] < 0) & (cat["duplicate_of"] == "")
    assert len(groups) == round(SMALL.p_duplicate * standalone.sum()) > 0
    for original, twin in groups:
        a, b = row.loc[original], row.loc[twin]
        assert a["title"] != b["title"] and a["topic"] == b["topic"]
        assert a["series"] == b["series"] == -1 and a["duplicate_of"] == "" and b["duplicate_of"] == original
        # lightly edited: at most a few words of the text changed, or the same words reordered ("resources and
        # exercises" → "exercises and resources", which difflib counts as four edits)
        edits = difflib.SequenceMatcher(a=a["text"].split(), b=b["text"].split()).get_opcodes()
        changed = sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in edits if op != "equal")
        reordered = sorted(a["text"].split()) == sorted(b["text"].split())
        assert changed <= 3 or reordered, (a["text"], b["text"])
    assert {d for g in groups for d in g[1:]} == set(cat.loc[cat["duplicate_of"] != "", "item_id"])
    assert sorted(d for ids in truth["topics"].values() for d in ids) == sorted(cat["item_id"])


def test_twins_share_the_traffic_of_their_story_under_every_mechanism():
    log, cat, truth = default_data()
    twins = set(cat.loc[cat["duplicate_of"] != "", "item_id"])
    grouped = {d for g in truth["duplicate_groups"] for d in g}
    assert grouped <= set(log["item_id"])
    in_group = log["item_id"].isin(grouped)
    for mech in ("start", "topic", "jump", "revisit", "induction", "repeat"):
        rows = log[in_group & (log["mechanism"] == mech)]
        assert len(rows) > 100 and abs(rows["item_id"].isin(twins).mean() - 0.5) < 0.1, mech
    # a revisit goes back to the story, under either id: often one this user has not read before
    revisits = in_group & (log["mechanism"] == "revisit")
    fresh = revisits & ~log.duplicated(["user_id", "item_id"])  # the user's first read of this id
    assert fresh.sum() > 0.2 * revisits.sum() > 0


def test_no_duplicates_when_p_duplicate_is_zero():
    _, cat, truth = generate(SyntheticConfig(**{**SMALL.__dict__, "p_duplicate": 0.0}))
    assert truth["duplicate_groups"] == [] and (cat["duplicate_of"] == "").all()
    assert len(cat) == SMALL.n_topics * SMALL.docs_per_topic + sum(len(s) for s in truth["series"])


def test_every_text_names_its_topic_and_series_part():
    _, cat, _ = default_data()
    for title, topic, part, text in zip(cat["title"], cat["topic"], cat["part"], cat["text"]):
        assert topic.lower() in text.lower(), (topic, text)
        if part:
            series = title.rsplit(", part", 1)[0]
            assert series in text and (f"part {part}" in text.lower() if part > 1 else "first" in text), (title, text)
    # varied: only a twin may repeat its original's text, and no two stand-alone documents of a topic share
    # their first sentence (a subject in one template), while a noun has at most 12 documents in a topic
    originals = cat[cat["duplicate_of"] == ""]
    assert not originals["text"].duplicated().any()
    standalone = originals[originals["series"] < 0]
    first = standalone["text"].str.split(". ", n=1, regex=False).str[0]
    assert not first.groupby(standalone["topic"]).apply(lambda s: s.duplicated().any()).any()
