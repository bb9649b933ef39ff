"""Built-in default data: synthetic "document journeys" with planted, known mechanisms.

Users browse documents grouped into topics, in sessions. Each next document comes from one mechanism,
recorded per row in the log's `mechanism` column (the ground truth), checked in this order:

- `induction` (rate `p_induction`): right after a *revisit* of an earlier document a, replay what followed
  a earlier in the same user's history (…a b … a → b), and go on replaying at the same rate (…a b c … a b
  → c): the user retraces an earlier path. b is whatever this user happened to read after a, so it is
  user-specific: bigram statistics cannot predict it, attention to the history can (an induction head).
- `series` (`p_series`): the current document is part k of an ordered series → part k+1 (directional
  bigrams: part 2 follows part 1, never the reverse).
- then one draw among: `repeat` (`p_repeat`, the same document again: A→A), `revisit` (`p_revisit`, an
  earlier document of this user's history), `jump` (`p_jump`, a uniformly random document from a topic
  the user does not follow: AAAA→C), else `topic` (a document of the session's topic, Zipf-popular).

Timestamps: minutes apart within a session, days between sessions. Titles are unique and readable.
Everything is a deterministic function of the config (one `numpy` generator seeded by `seed`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from circuits.config import option
from circuits.data.readers import DEFAULT_DATA
from circuits.errors import UserError

TOPICS = [
    "Astronomy", "Baking", "Chess", "Cycling", "Databases", "Ecology", "Film", "Gardening", "History",
    "Jazz", "Knitting", "Linguistics", "Mountaineering", "Neuroscience", "Origami", "Photography",
    "Quantum", "Robotics", "Sailing", "Typography", "Urbanism", "Volcanoes", "Wine", "Yoga",
]
ADJECTIVES = [
    "quiet", "hidden", "practical", "curious", "essential", "forgotten", "modern", "gentle", "bold",
    "surprising", "complete", "little", "honest", "visual", "patient", "radical",
]
NOUNS = [
    "guide", "history", "primer", "notes", "mistakes", "debate", "toolkit", "questions", "map",
    "tricks", "myths", "lessons", "field report", "interview", "case study", "checklist",
]
SERIES_NAMES = ["Foundations", "Deep dive", "Masterclass", "Walkthrough", "Course", "Chronicle"]
# Bumped whenever the same config generates different data (2: induction replays continue), so cached
# folders of an older generator are never reused.
GENERATOR_VERSION = 2
MECHANISMS = ("start", "induction", "series", "repeat", "revisit", "jump", "topic")


@dataclass(frozen=True)
class SyntheticConfig:
    """What the generator makes; every field is a flag of `python -m circuits.synthetic`."""

    seed: int = option(0, "generator seed")
    n_topics: int = option(20, f"topics, 1 to {len(TOPICS)}")
    docs_per_topic: int = option(40, "documents per topic")
    series_per_topic: int = option(3, "ordered series (part 1 → part 2 → …) per topic")
    series_min_parts: int = option(3, "fewest parts of a series")
    series_max_parts: int = option(6, "most parts of a series")
    n_users: int = option(3000, "users")
    min_length: int = option(20, "shortest journey (at least 3)")
    max_length: int = option(60, "longest journey")
    topics_per_user: int = option(2, "topics each user follows")
    session_mean_length: float = option(8.0, "mean documents per session")
    p_induction: float = option(0.8, "after a revisit, probability of replaying what followed it earlier")
    p_series: float = option(0.7, "probability of reading the next part of a series")
    p_repeat: float = option(0.12, "probability of the same document again (A→A)")
    p_revisit: float = option(0.2, "probability of an earlier document of the user's history")
    p_jump: float = option(0.05, "probability of a document from a topic the user does not follow (AAAA→C)")
    zipf_exponent: float = option(1.0, "popularity skew of documents within a topic")

    def __post_init__(self) -> None:
        if not 1 <= self.n_topics <= len(TOPICS):
            raise UserError(f"n_topics must be in 1..{len(TOPICS)}, got {self.n_topics}")
        if self.p_repeat + self.p_revisit + self.p_jump > 1:
            raise UserError("p_repeat + p_revisit + p_jump must be at most 1")
        if self.min_length < 3 or self.max_length < self.min_length:
            raise UserError("need 3 <= min_length <= max_length")

    def key(self) -> str:
        spec = {**asdict(self), "generator_version": GENERATOR_VERSION}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Documents: item_id, title, topic, series (-1 if none), part (1-based, 0 if none), n_parts."""
    rows = []
    series_id = 0
    for t in range(cfg.n_topics):
        topic = TOPICS[t]
        pairs = [(a, n) for a in ADJECTIVES for n in NOUNS]
        for j in rng.choice(len(pairs), size=cfg.docs_per_topic, replace=False):
            a, n = pairs[j]
            rows.append((f"{topic}: the {a} {n}", topic, -1, 0, 0))
        for s in range(cfg.series_per_topic):
            n_parts = int(rng.integers(cfg.series_min_parts, cfg.series_max_parts + 1))
            name = f"{topic} {SERIES_NAMES[s % len(SERIES_NAMES)]}" + (f" {s // len(SERIES_NAMES) + 1}" if s >= len(SERIES_NAMES) else "")
            for k in range(1, n_parts + 1):
                rows.append((f"{name}, part {k} of {n_parts}", topic, series_id, k, n_parts))
            series_id += 1
    df = pd.DataFrame(rows, columns=["title", "topic", "series", "part", "n_parts"])
    df.insert(0, "item_id", [f"d{i:05d}" for i in range(len(df))])
    assert df["title"].is_unique
    return df


def generate(cfg: SyntheticConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(log with a `mechanism` column, catalogue, ground truth)."""
    rng = np.random.default_rng(cfg.seed)
    cat = _catalogue(cfg, rng)
    n = len(cat)
    topic_of = cat["topic"].map({t: i for i, t in enumerate(TOPICS)}).to_numpy()
    by_topic = [np.flatnonzero(topic_of == t) for t in range(cfg.n_topics)]
    # Zipf popularity within each topic, in a random order of its documents
    weights = [np.arange(1, len(d) + 1, dtype=float) ** -cfg.zipf_exponent for d in by_topic]
    weights = [w / w.sum() for w in weights]
    by_topic = [rng.permutation(d) for d in by_topic]
    next_part = np.full(n, -1)
    for _, grp in cat[cat["series"] >= 0].groupby("series"):
        idx = grp.sort_values("part").index.to_numpy()
        next_part[idx[:-1]] = idx[1:]

    users, items, times, mechs = [], [], [], []
    user_topics: dict[str, list[str]] = {}
    base = 1_735_689_600.0  # 2025-01-01T00:00:00Z
    for u in range(cfg.n_users):
        topics = rng.choice(cfg.n_topics, size=cfg.topics_per_user, replace=False)
        user_topics[f"u{u:05d}"] = [TOPICS[t] for t in topics]
        length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
        t = base + rng.uniform(0, 30 * 86400)
        hist: list[int] = []
        last_mech = "start"
        session_left = 0
        topic = topics[0]
        for step in range(length):
            if session_left == 0:  # new session: days later, maybe another of the user's topics
                if step:
                    t += rng.exponential(2 * 86400) + 3600
                session_left = int(rng.geometric(1 / cfg.session_mean_length))
                topic = topics[rng.integers(len(topics))]
            elif step:
                t += 10 + rng.exponential(180)
            session_left -= 1
            mech, item = _next(cfg, rng, hist, last_mech, topic, topics, by_topic, weights, next_part)
            hist.append(item)
            last_mech = mech
            users.append(f"u{u:05d}")
            items.append(cat["item_id"].iat[item])
            times.append(int(t))
            mechs.append(mech)
    log = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times, "mechanism": mechs})
    series_pairs = [[cat["item_id"].iat[a], cat["item_id"].iat[b]] for a, b in enumerate(next_part) if b >= 0]
    truth = {
        "config": asdict(cfg),
        "generator_version": GENERATOR_VERSION,
        "mechanisms": {m: int((log["mechanism"] == m).sum()) for m in MECHANISMS},
        "topics": {TOPICS[t]: cat["item_id"].to_numpy()[by_topic[t]].tolist() for t in range(cfg.n_topics)},
        "series": [g.sort_values("part")["item_id"].tolist() for _, g in cat[cat["series"] >= 0].groupby("series")],
        "series_pairs": series_pairs,
        "user_topics": user_topics,
    }
    return log, cat, truth


def _next(cfg, rng, hist, last_mech, topic, topics, by_topic, weights, next_part) -> tuple[str, int]:
    if not hist:
        return "start", _topic_doc(rng, topic, by_topic, weights)
    cur = hist[-1]
    if last_mech in ("revisit", "induction") and rng.random() < cfg.p_induction:
        follower = _follower(hist)
        if follower is not None:
            return "induction", follower
    if next_part[cur] >= 0 and rng.random() < cfg.p_series:
        return "series", int(next_part[cur])
    r = rng.random()
    if r < cfg.p_repeat:
        return "repeat", cur
    r -= cfg.p_repeat
    if r < cfg.p_revisit:
        earlier = [h for h in hist[:-2] if h != cur]  # something seen before, with a follower
        if earlier:
            return "revisit", int(earlier[rng.integers(len(earlier))])
    elif r - cfg.p_revisit < cfg.p_jump:
        others = [t for t in range(cfg.n_topics) if t not in topics]
        if others:
            return "jump", int(rng.choice(by_topic[others[rng.integers(len(others))]]))
    return "topic", _topic_doc(rng, topic, by_topic, weights)


def _follower(hist: list[int]) -> int | None:
    """What followed the most recent earlier occurrence of the current item (…a b … a → b)."""
    a = hist[-1]
    for j in range(len(hist) - 3, -1, -1):
        if hist[j] == a:
            return hist[j + 1]
    return None


def _topic_doc(rng, topic, by_topic, weights) -> int:
    return int(rng.choice(by_topic[topic], p=weights[topic]))


def write(cfg: SyntheticConfig, out: Path) -> Path:
    """Write interactions.tsv.gz, items.tsv and ground_truth.json into `out`, atomically."""
    log, cat, truth = generate(cfg)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.to_csv(tmp / "interactions.tsv.gz", sep="\t", index=False)
    cat.to_csv(tmp / "items.tsv", sep="\t", index=False)
    (tmp / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def ensure_synthetic(cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """The cached folder of this config's data, generated on first use."""
    from circuits.data.sequences import cache_dir

    out = cache_dir() / f"synthetic-{cfg.key()}"
    if not (out / "ground_truth.json").exists():
        write(cfg, out)
    return out


def load_ground_truth(folder: Path) -> dict:
    return json.loads((Path(folder) / "ground_truth.json").read_text())


def ground_truth_of(source: str, seed: int = 0) -> dict | None:
    """The planted ground truth of a data source, if it is synthetic: 'synthetic' (the built-in default with
    `seed`) or a folder (or a file in one) written by the generator; None for any other data."""
    folder = ensure_synthetic(SyntheticConfig(seed=seed)) if source == DEFAULT_DATA else Path(source)
    path = (folder if folder.is_dir() else folder.parent) / "ground_truth.json"
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":  # the generator's command was `python -m circuits.data.synthetic` before 0.2
    from circuits.cli import run_cli
    from circuits.synthetic import main

    run_cli(main)
