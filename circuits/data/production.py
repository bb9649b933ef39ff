"""A production-sized synthetic log: a million documents, a million users, ~50 million interactions.

The small generator (`circuits.data.synthetic`) walks each user in Python; this one is vectorised, so that a log
of real size can be written on a laptop in a few minutes and in bounded memory. Users are generated in chunks
(`users_per_chunk`); within a chunk the generator steps over positions t = 0, 1, … with array operations over all
users still active at t, and each chunk becomes one Parquet part. Nothing is kept per interaction beyond the
chunk being written.

The catalogue: documents 1..n_docs in `n_topics` topics of (nearly) equal size, each topic's documents in a
random order of popularity (Zipf within the topic, exponent `zipf_exponent`), topics themselves Zipf-popular
(`topic_zipf_exponent`). Each document d has one planted successor succ[d], another document of its topic (the
documents of a topic form one random cycle, so succ[d] != d).

A user follows 1..`topics_per_user` topics (drawn by topic popularity) and reads in sessions (geometric length,
mean `session_mean_length`; each session picks one of the user's topics). The first document is a topic draw;
each next one comes from one mechanism, drawn with these probabilities:

- `successor` (`p_successor`): succ[previous document], a fixed bigram that a 0-layer model (W_E W_U) learns;
- `repeat` (`p_repeat`): the previous document again (A → A);
- `revisit` (`p_revisit`): a uniformly drawn earlier document of this user's history other than the previous
  one (positions 0..t-2; at t = 1 there is none and it falls to `topic`), which attention to the history can
  copy but no bigram can predict;
- else `topic`: a Zipf-popular document of the session's topic.

`ground_truth.json` counts the mechanisms (`start` is each user's first document) and holds the first 10,000
successor pairs; `catalogue(cfg).successor` gives all of them.

Timestamps are int64 seconds from 2025-01-01 plus a per-user offset (up to 90 days): 10 s + an exponential of
mean 3 minutes between documents of a session, 1 h + an exponential of mean 2 days between sessions, so they
strictly increase within a user.

Randomness. The catalogue comes from `np.random.default_rng([seed, CATALOGUE_STREAM])`. A user's draws are a
counter-based hash (splitmix64) of (seed, user id, position, purpose), not a sequential generator: a user's
journey is a function of the seed, the catalogue and the user id alone, so it does not depend on the chunk it was
generated in. Changing `users_per_chunk` changes only how the same rows are split into parts.

Output (written to `OUT.tmp`, renamed to `OUT` at the end):
- `interactions/part-00000.parquet`, …: one part per chunk of users, columns `user_id`, `item_id`, `timestamp`
  (int64); users 0..n_users-1 in order, a user's rows contiguous and in time order;
- `items.parquet`: `item_id` (int64, 1..n_docs), `title` (unique), `text` (a sentence naming the topic, for text
  encoders), `topic` (int32);
- `ground_truth.json`: config, generator version, row counts, mechanism counts, a sample of successor pairs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from circuits.config import option
from circuits.data.synthetic import TOPIC_SUBJECTS, TOPICS
from circuits.errors import UserError

GENERATOR_VERSION = 1
CATALOGUE_STREAM = 0xCA7A  # the catalogue's generator: default_rng([seed, CATALOGUE_STREAM])
MECHANISMS = ("start", "successor", "repeat", "revisit", "topic")
START, SUCCESSOR, REPEAT, REVISIT, TOPIC = range(len(MECHANISMS))
EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z
START_SPREAD_S = 90 * 86_400  # users start within 90 days of the epoch
IN_SESSION_GAP_MIN_S, IN_SESSION_GAP_MEAN_S = 10, 180
SESSION_GAP_MIN_S, SESSION_GAP_MEAN_S = 3_600, 2 * 86_400
ROW_GROUP_ROWS = 1_000_000
SUCCESSOR_SAMPLE = 10_000  # successor pairs written to ground_truth.json
MAX_TOPICS_PER_USER = 8
# A draw's hash key packs (user, position, purpose) into 64 bits: user << 20 | position << 4 | purpose.
POSITION_BITS, PURPOSE_BITS = 16, 4
USER_LEVEL = (1 << POSITION_BITS) - 1  # the position field of a user's once-per-user draws
TEXT_TEMPLATES = (
    "A short note on {subject}, from the {word} collection (topic {t}).",
    "Notes about {subject} for readers interested in {word} (topic {t}).",
    "A reader's take on {subject}, part of the {word} pages (topic {t}).",
    "What people who follow {word} say about {subject} (topic {t}).",
)


@dataclass(frozen=True)
class ProductionConfig:
    seed: int = option(0, "seed (0 or more)")
    n_docs: int = option(1_000_000, "documents (item ids 1..n_docs)")
    n_users: int = option(1_000_000, "users (ids 0..n_users-1)")
    mean_length: float = option(50.0, "mean interactions per user (lengths: min_length + a lognormal, capped)")
    min_length: int = option(3, "shortest history (at least 3)")
    max_length: int = option(500, "longest history")
    length_sigma: float = option(1.0, "spread of the lognormal part of the lengths")
    n_topics: int = option(1_000, "topics (clusters of documents, each of at least 2)")
    topics_per_user: int = option(3, "each user follows 1..this many topics")
    session_mean_length: float = option(8.0, "mean documents per session (more than 1)")
    p_successor: float = option(0.3, "probability of the previous document's planted successor")
    p_repeat: float = option(0.05, "probability of the previous document again (A→A)")
    p_revisit: float = option(0.15, "probability of an earlier document of the user's history")
    zipf_exponent: float = option(1.0, "popularity skew of documents within a topic")
    topic_zipf_exponent: float = option(1.0, "popularity skew of topics")
    users_per_chunk: int = option(50_000, "users per Parquet part (does not change the rows)")

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise UserError(f"seed must be 0 or more, got {self.seed}")
        if self.n_users < 1 or self.users_per_chunk < 1:
            raise UserError("n_users and users_per_chunk must be positive")
        if self.n_topics < 1 or self.n_docs < 2 * self.n_topics:
            raise UserError(f"need n_topics >= 1 and at least 2 documents per topic, got {self.n_docs} documents "
                            f"in {self.n_topics} topics")
        if not 3 <= self.min_length < self.mean_length < self.max_length < USER_LEVEL:
            raise UserError(f"need 3 <= min_length < mean_length < max_length < {USER_LEVEL}, got "
                            f"{self.min_length}, {self.mean_length}, {self.max_length}")
        if self.length_sigma <= 0:
            raise UserError(f"length_sigma must be positive, got {self.length_sigma}")
        if not 1 <= self.topics_per_user <= min(MAX_TOPICS_PER_USER, self.n_topics):
            raise UserError(f"topics_per_user must be in 1..{min(MAX_TOPICS_PER_USER, self.n_topics)}, "
                            f"got {self.topics_per_user}")
        if self.session_mean_length <= 1:
            raise UserError(f"session_mean_length must be more than 1, got {self.session_mean_length}")
        ps = (self.p_successor, self.p_repeat, self.p_revisit)
        if min(ps) < 0 or sum(ps) > 1:
            raise UserError("p_successor, p_repeat, p_revisit must be 0 or more and sum to at most 1")
        if self.zipf_exponent < 0 or self.topic_zipf_exponent < 0:
            raise UserError("Zipf exponents must be 0 or more")

    @property
    def n_chunks(self) -> int:
        return -(-self.n_users // self.users_per_chunk)


# --- counter-based randomness ---------------------------------------------------------------------------------

_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_TO_UNIT = 2.0**-32


def _seed_key(seed: int) -> np.uint64:
    """The seed's 64-bit offset of every hash state (splitmix64 of the seed)."""
    z = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return np.uint64(z ^ (z >> 31))


def _uniforms(seed_key: np.uint64, users: np.ndarray, position: int, purpose: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent uniforms in [0, 1) per user (32 bits each): the splitmix64 finaliser, a bijection of 64-bit
    words, of key · golden + seed_key, key = user << 20 | position << 4 | purpose."""
    z = users << np.uint64(POSITION_BITS + PURPOSE_BITS)
    z |= np.uint64((position << PURPOSE_BITS) | purpose)
    z *= _GOLDEN
    z += seed_key
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(32)).astype(np.float64) * _TO_UNIT, (z & _LOW32).astype(np.float64) * _TO_UNIT


def _zipf_rank(u: np.ndarray, size: np.ndarray | int, exponent: float) -> np.ndarray:
    """Ranks 1..size with P(rank ≥ r) ≈ that of Zipf's law (the continuous power law x^-s on [1, size + 1),
    floored), from uniforms `u`, by inverting its CDF."""
    size = np.asarray(size, dtype=np.int64)
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(u * np.log(size + 1.0))
    else:
        a = 1.0 - exponent
        x = (1.0 + u * ((size + 1.0) ** a - 1.0)) ** (1.0 / a)
    return np.clip(x.astype(np.int64), 1, size)


def _geometric(u: np.ndarray, mean: float) -> np.ndarray:
    """Geometric on 1, 2, … with this mean, from uniforms."""
    return 1 + np.floor(np.log1p(-u) / math.log1p(-1.0 / mean)).astype(np.int64)


def _exponential_s(u: np.ndarray, minimum: int, mean: float) -> np.ndarray:
    """Whole seconds: minimum + an exponential of this mean, from uniforms."""
    return minimum + np.floor(-mean * np.log1p(-u)).astype(np.int64)


def length_mu(cfg: ProductionConfig) -> float:
    """μ of the lengths' lognormal part, so that E[min(max_length, min_length + ⌊exp(μ + σZ)⌋)] = mean_length:
    E[min(⌊X⌋, M)] = Σ_{k=1..M} P(X ≥ k), solved for μ by bisection."""
    cap = cfg.max_length - cfg.min_length
    target = cfg.mean_length - cfg.min_length
    logs = [math.log(k) for k in range(1, cap + 1)]
    scale = cfg.length_sigma * math.sqrt(2)

    def capped_mean(mu: float) -> float:
        return sum(0.5 * math.erfc((lk - mu) / scale) for lk in logs)

    lo, hi = -10.0, math.log(cap) + 10 * cfg.length_sigma
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if capped_mean(mid) < target else (lo, mid)
    return (lo + hi) / 2


# --- the catalogue --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Catalogue:
    """Documents by topic. Arrays indexed by item id have length n_docs + 1 (entry 0 unused).

    `members[offsets[t]: offsets[t] + sizes[t]]` are topic t's item ids, most popular first; `topic_of[d]`,
    `successor[d]` (the planted next document, same topic); `topic_by_popularity[r]` the topic of popularity rank
    r + 1."""

    members: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    topic_of: np.ndarray
    successor: np.ndarray
    topic_by_popularity: np.ndarray


def catalogue(cfg: ProductionConfig) -> Catalogue:
    rng = np.random.default_rng([cfg.seed, CATALOGUE_STREAM])
    n, k = cfg.n_docs, cfg.n_topics
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    offsets = np.zeros(k, dtype=np.int64)
    offsets[1:] = np.cumsum(sizes)[:-1]
    block = np.repeat(np.arange(k), sizes)
    members = rng.permutation(n).astype(np.int64) + 1  # topic t's block, in popularity order
    topic_of = np.zeros(n + 1, dtype=np.int32)
    topic_of[members] = block
    # the successor cycle of each topic runs through its documents in a random order (not the popularity order)
    cycle = members[np.lexsort((rng.random(n), block))]
    following = np.roll(cycle, -1)
    following[offsets + sizes - 1] = cycle[offsets]  # a topic's last document → its first
    successor = np.zeros(n + 1, dtype=np.int64)
    successor[cycle] = following
    topic_by_popularity = rng.permutation(k).astype(np.int64)
    return Catalogue(members, offsets, sizes, topic_of, successor, topic_by_popularity)


def topic_names(n_topics: int) -> list[tuple[str, str, str]]:
    """(name, word, subject) of each topic: a domain and one of its subjects ("Chess: rook endgames"), numbered
    from the 289th topic on ("Chess: rook endgames (2)"), so that names are unique and related topics read alike."""
    out = []
    per_round = len(TOPICS) * 12
    for t in range(n_topics):
        domain = TOPICS[t % len(TOPICS)]
        word, subjects = TOPIC_SUBJECTS[domain]
        subject = subjects[(t // len(TOPICS)) % len(subjects)]
        name = f"{domain}: {subject}" + (f" ({t // per_round + 1})" if t >= per_round else "")
        out.append((name, word, subject))
    return out


def items_table(cfg: ProductionConfig, cat: Catalogue):
    """item_id, title ("<topic name> · note <k>", k numbering the topic's documents by id), text, topic."""
    import pyarrow as pa
    import pyarrow.compute as pc

    topic = cat.topic_of[1:].astype(np.int64)
    by_topic = np.argsort(topic, kind="stable")  # item ids ascending within each topic
    serial = np.empty(cfg.n_docs, dtype=np.int64)
    serial[by_topic] = np.arange(cfg.n_docs) - cat.offsets[topic[by_topic]] + 1
    names = topic_names(cfg.n_topics)
    titles = pc.binary_join_element_wise(pa.array([n for n, _, _ in names]).take(pa.array(topic)),
                                         pc.cast(pa.array(serial), pa.string()), " · note ")
    texts = pa.array([template.format(subject=subject, word=word, t=t) for t, (_, word, subject) in enumerate(names)
                      for template in TEXT_TEMPLATES])
    text = texts.take(pa.array(topic * len(TEXT_TEMPLATES) + serial % len(TEXT_TEMPLATES)))
    return pa.table({"item_id": pa.array(np.arange(1, cfg.n_docs + 1, dtype=np.int64)), "title": titles,
                     "text": text, "topic": pa.array(cat.topic_of[1:])})


# --- the journeys ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Journeys:
    """The rows of a range of users, flat: user_id, item_id, timestamp (int64) and mechanism (int8, an index
    into MECHANISMS), a user's rows contiguous and in time order."""

    user_id: np.ndarray
    item_id: np.ndarray
    timestamp: np.ndarray
    mechanism: np.ndarray


def journeys(cfg: ProductionConfig, cat: Catalogue, first_user: int, n_users: int) -> Journeys:
    """The journeys of users first_user..first_user + n_users - 1, stepping over positions with array operations
    over the users still active (sorted by length, longest first, so that they are a prefix)."""
    key = _seed_key(cfg.seed)
    users = np.arange(first_user, first_user + n_users, dtype=np.uint64)
    # once-per-user draws: length, topics followed, start time
    a, b = _uniforms(key, users, USER_LEVEL, 0)
    normal = np.sqrt(-2.0 * np.log1p(-a)) * np.cos(2.0 * np.pi * b)  # Box–Muller
    lognormal = np.exp(length_mu(cfg) + cfg.length_sigma * normal)
    length = np.minimum(cfg.max_length, cfg.min_length + np.minimum(lognormal, cfg.max_length).astype(np.int64))
    a, b = _uniforms(key, users, USER_LEVEL, 1)
    n_followed = 1 + (a * cfg.topics_per_user).astype(np.int64)
    start = EPOCH + (b * START_SPREAD_S).astype(np.int64)
    followed = np.stack([cat.topic_by_popularity[_zipf_rank(_uniforms(key, users, USER_LEVEL, 2 + slot)[0],
                                                            cfg.n_topics, cfg.topic_zipf_exponent) - 1]
                         for slot in range(cfg.topics_per_user)], axis=1)

    row_start = np.zeros(n_users, dtype=np.int64)
    row_start[1:] = np.cumsum(length)[:-1]
    total = int(length.sum())
    item = np.empty(total, dtype=np.int64)
    timestamp = np.empty(total, dtype=np.int64)
    mechanism = np.empty(total, dtype=np.int8)

    order = np.argsort(-length, kind="stable")  # longest first: the users active at position t are a prefix
    n_active = n_users - np.searchsorted(length[order][::-1], np.arange(int(length.max())), side="right")
    users, base, n_followed, followed = users[order], row_start[order], n_followed[order], followed[order]
    clock = start[order]
    session_left = np.zeros(n_users, dtype=np.int64)
    session_topic = np.zeros(n_users, dtype=np.int64)
    thresholds = np.cumsum([cfg.p_successor, cfg.p_repeat, cfg.p_revisit])
    mechanism_codes = np.array([SUCCESSOR, REPEAT, REVISIT, TOPIC], dtype=np.int8)
    log_size = np.log(cat.sizes + 1.0)

    for t, k in enumerate(n_active):
        u, pos = users[:k], base[:k] + t
        new_session = session_left[:k] == 0
        if new_session.any():
            idx = np.flatnonzero(new_session)
            a, b = _uniforms(key, u[idx], t, 2)
            session_left[idx] = _geometric(a, cfg.session_mean_length)
            session_topic[idx] = followed[idx, (b * n_followed[idx]).astype(np.int64)]
        session_left[:k] -= 1
        u_mechanism, u_revisit = _uniforms(key, u, t, 0)
        u_rank, u_gap = _uniforms(key, u, t, 1)
        if t:
            gap = np.where(new_session, _exponential_s(u_gap, SESSION_GAP_MIN_S, SESSION_GAP_MEAN_S),
                           _exponential_s(u_gap, IN_SESSION_GAP_MIN_S, IN_SESSION_GAP_MEAN_S))
            clock[:k] += gap
        timestamp[pos] = clock[:k]

        topic = session_topic[:k]
        if abs(cfg.zipf_exponent - 1.0) < 1e-9:  # _zipf_rank, with the per-topic logarithm precomputed
            rank = np.minimum(np.exp(u_rank * log_size[topic]).astype(np.int64), cat.sizes[topic])
        else:
            rank = _zipf_rank(u_rank, cat.sizes[topic], cfg.zipf_exponent)
        topic_doc = cat.members[cat.offsets[topic] + rank - 1]
        if t == 0:
            item[pos] = topic_doc
            mechanism[pos] = START
            continue
        code = mechanism_codes[np.searchsorted(thresholds, u_mechanism, side="right")]
        if t == 1:
            code[code == REVISIT] = TOPIC  # nothing before the previous document yet
        prev = item[pos - 1]
        earlier = item[base[:k] + (u_revisit * (t - 1)).astype(np.int64)]  # positions 0..t-2
        item[pos] = np.choose(code - SUCCESSOR, (cat.successor[prev], prev, earlier, topic_doc))
        mechanism[pos] = code

    user_id = np.repeat(np.arange(first_user, first_user + n_users, dtype=np.int64), length)
    return Journeys(user_id, item, timestamp, mechanism)


# --- writing --------------------------------------------------------------------------------------------------

def _write_part(path: Path, rows: Journeys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"user_id": rows.user_id, "item_id": rows.item_id, "timestamp": rows.timestamp})
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression="zstd")


def generate_production(cfg: ProductionConfig, out: Path, progress: bool = True) -> Path:
    """Write interactions/part-*.parquet, items.parquet and ground_truth.json into `out` (replaced if it exists),
    through `out`.tmp renamed at the end. Each part is written on a second thread while the next is generated."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "interactions").mkdir(parents=True)
    try:
        _write_data_set(cfg, tmp, progress)
    except BaseException:  # an error or an interrupt leaves `out` as it was, and no half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # swap in: the old folder moves aside first, so a crash leaves either the old data set or the new one
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _write_data_set(cfg: ProductionConfig, tmp: Path, progress: bool) -> None:
    import pyarrow.parquet as pq
    from tqdm import tqdm

    cat = catalogue(cfg)
    pq.write_table(items_table(cfg, cat), tmp / "items.parquet", row_group_size=ROW_GROUP_ROWS, compression="zstd")

    counts = np.zeros(len(MECHANISMS), dtype=np.int64)
    rows_per_part: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for chunk in tqdm(range(cfg.n_chunks), desc="user chunks", unit="part", disable=not progress):
            first = chunk * cfg.users_per_chunk
            rows = journeys(cfg, cat, first, min(cfg.users_per_chunk, cfg.n_users - first))
            counts += np.bincount(rows.mechanism, minlength=len(MECHANISMS))
            rows_per_part.append(len(rows.item_id))
            if pending is not None:
                pending.result()  # at most one part in memory besides the one being generated
            pending = writer.submit(_write_part, tmp / "interactions" / f"part-{chunk:05d}.parquet", rows)
            del rows
        pending.result()

    n_pairs = min(SUCCESSOR_SAMPLE, cfg.n_docs)
    truth = {
        "config": asdict(cfg),
        "generator": "production",
        "generator_version": GENERATOR_VERSION,
        "n_interactions": int(sum(rows_per_part)),
        "n_users": cfg.n_users,
        "n_docs": cfg.n_docs,
        "n_parts": cfg.n_chunks,
        "rows_per_part": rows_per_part,
        "mechanisms": {m: int(c) for m, c in zip(MECHANISMS, counts)},
        "length_mu": length_mu(cfg),
        # the planted bigrams of items 1..10,000 (ids as strings, as the small generator's series_pairs);
        # catalogue(cfg).successor has them all
        "successor_pairs": [[str(d), str(s)] for d, s in zip(range(1, n_pairs + 1), cat.successor[1:n_pairs + 1])],
    }
    (tmp / "ground_truth.json").write_text(json.dumps(truth) + "\n")
