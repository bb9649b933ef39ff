"""Built-in default data: synthetic "document journeys" with planted, known mechanisms.

Users browse documents grouped into topics, in sessions. Each next document comes from one mechanism,
recorded per row in the log's `mechanism` column (the ground truth), checked in this order:

- `induction` (rate `p_induction`): right after a *revisit* of an earlier document a, replay what followed
  a earlier in the same user's history (…a b … a → b), and go on replaying at the same rate (…a b c … a b
  → c): the user retraces an earlier path. b is whatever this user happened to read after a, so it is
  user-specific: bigram statistics cannot predict it, attention to the history can (an induction head).
  The match is on the exact id: after a revisit under a story's other id (below) there is no replay.
- `series` (`p_series`): the current document is part k of an ordered series → part k+1 (directional
  bigrams: part 2 follows part 1, never the reverse).
- then one draw among: `repeat` (`p_repeat`, the same document again: A→A), `revisit` (`p_revisit`, an
  earlier story of this user's history), `jump` (`p_jump`, a uniformly random story from a topic the user
  does not follow: AAAA→C), else `topic` (a story of the session's topic, Zipf-popular).

Every document has a title (unique) and a `text` for a text encoder: one or two sentences naming the topic and
a topic-specific subject ("A guide to rook endgames for newcomers to chess. It goes at a gentle pace."); a
series part's text names the series, the part and the previous part's subject. Near-duplicates: a share
`p_duplicate` of the stand-alone documents is republished under a second id (a *twin*: a new title, "Chess:
the gentle guide" → "A gentle guide to chess", the text lightly edited, `duplicate_of` naming the original).
The journeys are drawn over *stories* (a document and its twin are one story): wherever a story is emitted
(start, topic, jump, revisit) it goes out under either id at even odds, so both ids get half its traffic and
only the text says they are the same; `repeat` repeats the exact id and `induction` replays the exact id that
followed. Under all-MiniLM-L6-v2 (embedding "title. text") a twin is its original's nearest neighbour (cosine
about 0.96, nearly always ≥ 0.9, which almost no other pair reaches); other documents of the topic are at about
0.54, consecutive series parts 0.82, other topics 0.15.

Timestamps: minutes apart within a session, days between sessions.
Everything is a deterministic function of the config (one `numpy` generator seeded by `seed`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from circuits.config import option
from circuits.data.names import DEFAULT_DATA
from circuits.errors import UserError

if TYPE_CHECKING:  # imported where used: the command's `--help` needs no pandas
    import pandas as pd

# What each topic's documents are about: the word the texts name it by, and subjects specific enough to evoke it.
TOPIC_SUBJECTS = {
    "Astronomy": ("astronomy", [
        "variable stars", "the moons of Jupiter", "backyard telescopes", "dark-sky sites", "exoplanet transits",
        "meteor showers", "the life cycle of stars", "radio telescopes", "chasing solar eclipses",
        "mapping the Milky Way", "comets and their tails", "the expanding universe"]),
    "Baking": ("baking", [
        "sourdough starters", "laminated croissant dough", "choux pastry", "dense rye loaves", "oven spring",
        "kneading and gluten", "meringues", "shortcrust pastry", "proofing times", "brioche dough",
        "sponge cakes", "wholemeal flour"]),
    "Chess": ("chess", [
        "the Sicilian Defence", "rook endgames", "pawn structure", "opening traps", "blitz clock management",
        "the Queen's Gambit", "knight outposts", "tactical combinations", "correspondence games", "king safety",
        "world championship matches", "studying grandmaster games"]),
    "Cycling": ("cycling", [
        "climbing steep hills", "bike fitting", "gear ratios", "long-distance touring", "commuting in traffic",
        "fixing punctures", "the Tour de France", "interval training on the bike", "gravel riding",
        "building wheels", "pacing a time trial", "riding in a peloton"]),
    "Databases": ("databases", [
        "query planners", "B-tree indexes", "transaction isolation levels", "schema migrations", "SQL joins",
        "replication and failover", "write-ahead logging", "normalising tables", "columnar storage",
        "connection pooling", "deadlocks", "backups of production data"]),
    "Ecology": ("ecology", [
        "food webs", "wetland restoration", "invasive species", "pollinator decline", "keystone predators",
        "soil microbes", "rewilding farmland", "coral reef bleaching", "predator and prey population cycles",
        "old-growth forests", "seed dispersal", "measuring biodiversity"]),
    "Film": ("film", [
        "silent cinema", "film noir lighting", "continuity editing", "the French New Wave",
        "documentary filmmaking", "film scores", "shooting on 35mm", "screenplay structure",
        "practical special effects", "restoring old film prints", "the long take", "independent film festivals"]),
    "Gardening": ("gardening", [
        "composting kitchen waste", "raised vegetable beds", "pruning fruit trees", "companion planting",
        "growing tomatoes", "saving seeds", "perennial borders", "slugs and snails", "watering in a drought",
        "growing herbs", "planting spring bulbs", "no-dig beds"]),
    "History": ("history", [
        "the fall of Rome", "medieval trade routes", "the printing press", "the Industrial Revolution",
        "ancient Egyptian scribes", "the Silk Road", "reading primary sources", "the Hundred Years' War",
        "Renaissance Florence", "the Cold War", "oral testimony", "the age of exploration"]),
    "Jazz": ("jazz", [
        "bebop improvisation", "swing rhythm", "walking bass lines", "modal harmony", "big band arranging",
        "the jazz standards", "Blue Note records", "the piano trio", "scat singing", "playing by ear",
        "New Orleans brass bands", "free improvisation"]),
    "Knitting": ("knitting", [
        "cable stitches", "socks on double-pointed needles", "stranded colourwork", "blocking a finished sweater",
        "choosing yarn weight", "lace shawls", "fixing dropped stitches", "circular needles",
        "Fair Isle patterns", "casting on", "a first scarf", "reading charts"]),
    "Linguistics": ("linguistics", [
        "sound change", "sign languages", "endangered languages", "syntax trees", "how children learn to talk",
        "dialects and accents", "the origins of writing systems", "loanwords", "phonetics",
        "pidgins and creoles", "word order across languages", "how word meanings shift"]),
    "Mountaineering": ("mountaineering", [
        "acclimatisation at altitude", "ice axe technique", "alpine starts", "rope teams on glaciers",
        "avalanche risk", "the first ascent of Everest", "packing for a multi-day climb", "crampons",
        "turning back before the summit", "bivouacs", "winter climbing", "mountain rescue"]),
    "Neuroscience": ("neuroscience", [
        "synaptic plasticity", "the hippocampus and memory", "neurotransmitters", "brain imaging with fMRI",
        "sleep and the brain", "how neurons fire", "the visual cortex", "brain development in children",
        "neurodegenerative disease", "the dopamine reward system", "mapping the connectome", "pain perception"]),
    "Origami": ("origami", [
        "paper cranes", "modular models", "wet folding", "crease patterns", "choosing paper", "tessellations",
        "valley and mountain folds", "folded animals", "a folded paper box", "folding in engineering",
        "action models that move", "flowers from a single sheet"]),
    "Photography": ("photography", [
        "exposure and light meters", "portrait lighting", "street photography", "film cameras",
        "long exposures at night", "composition and framing", "choosing lenses", "black-and-white prints",
        "landscapes at dawn", "editing raw files", "depth of field", "flash"]),
    "Quantum": ("quantum physics", [
        "entanglement", "the double-slit experiment", "superposition", "qubits", "the uncertainty principle",
        "Schrodinger's cat", "tunnelling", "electron spin", "wave functions", "quantum cryptography",
        "the measurement problem", "the pioneers of the 1920s"]),
    "Robotics": ("robotics", [
        "robot arms", "motion planning", "balancing robots", "sensor fusion", "a line-following robot",
        "grippers", "self-driving cars", "servo motors", "machine vision", "swarms of small robots",
        "teaching robots by demonstration", "warehouse robots"]),
    "Sailing": ("sailing", [
        "tacking and gybing", "reading the wind", "sail trim", "knots every sailor needs", "night watches",
        "anchoring", "dinghy racing", "navigating by chart", "heavy weather", "crossing an ocean",
        "recovering from a capsize", "rigging a small boat"]),
    "Typography": ("typography", [
        "kerning", "serif and sans-serif typefaces", "line spacing", "type on screens", "the story of Garamond",
        "hand lettering", "pairing fonts", "grid layouts", "ligatures", "variable fonts", "letterpress printing",
        "readable body text"]),
    "Urbanism": ("urbanism", [
        "walkable neighbourhoods", "bus rapid transit", "zoning rules", "public squares", "protected bike lanes",
        "housing density", "street trees", "car-free city centres", "suburban sprawl", "urban heat islands",
        "mixed-use streets", "the fifteen-minute city"]),
    "Volcanoes": ("volcanoes", [
        "lava flows", "forecasting eruptions", "Vesuvius and Pompeii", "supervolcanoes", "ash clouds",
        "magma chambers", "the Pacific Ring of Fire", "Icelandic eruptions", "pyroclastic flows",
        "volcanic islands", "dormant craters", "living beside an active volcano"]),
    "Wine": ("wine", [
        "tasting notes", "the grapes of Burgundy", "natural wine", "pairing wine with food", "oak ageing",
        "champagne", "reading a label", "vintage years", "cellaring bottles", "Riesling", "the regions of Spain",
        "terroir"]),
    "Yoga": ("yoga", [
        "sun salutations", "breathing exercises", "balance poses", "easing back pain", "morning routines",
        "meditation after practice", "hip openers", "restorative poses", "a home practice",
        "stretching for runners", "headstands", "the roots of hatha"]),
}
TOPICS = list(TOPIC_SUBJECTS)
ADJECTIVES = [
    "quiet", "hidden", "practical", "curious", "essential", "forgotten", "modern", "gentle", "bold",
    "surprising", "complete", "little", "honest", "visual", "patient", "radical",
]
# noun → (how a retitled twin joins it to the topic, the first sentence of the text)
NOUNS = {
    "guide": ("to", "A guide to {subject} for newcomers to {topic}."),
    "history": ("of", "How {subject} came about, told as a chapter in the history of {topic}."),
    "primer": ("on", "A primer on {subject} that assumes no background in {topic}."),
    "notes": ("on", "Notes on {subject}, gathered over years of reading about {topic}."),
    "mistakes": ("in", "The usual mistakes with {subject}, and how people who know {topic} avoid them."),
    "debate": ("about", "Both sides of the argument over {subject}, a long-running debate in {topic}."),
    "toolkit": ("for", "Tools, resources and exercises for {subject}: a toolkit for {topic}."),
    "questions": ("about", "Answers to what newcomers to {topic} ask about {subject}."),
    "map": ("of", "A map of {subject}: where it sits in {topic} and what it connects to."),
    "tricks": ("of", "Small tricks for {subject} that regulars in {topic} rely on."),
    "myths": ("about", "Popular myths about {subject}, checked against the evidence in {topic}."),
    "lessons": ("in", "Lessons about {subject}, learned the hard way in {topic}."),
    "field report": ("on", "A field report on {subject} from people who work in {topic}."),
    "interview": ("about", "An interview about {subject} with a long-time figure in {topic}."),
    "case study": ("in", "A case study of {subject}, following one example from {topic} in detail."),
    "checklist": ("for", "A checklist for {subject}, for anyone serious about {topic}."),
}
PLURAL_NOUNS = {"notes", "mistakes", "questions", "tricks", "myths", "lessons"}
# adjective → the second sentence of the text, so the text carries the title's angle as well as its subject
ANGLES = {
    "quiet": "Calm, and free of hype.",
    "hidden": "It covers the details most people miss.",
    "practical": "Full of hands-on examples.",
    "curious": "Written for the curious.",
    "essential": "Only what really matters.",
    "forgotten": "It recovers ideas that have been forgotten.",
    "modern": "Brought up to date for today.",
    "gentle": "It goes at a gentle pace.",
    "bold": "It makes some bold claims.",
    "surprising": "Expect a few surprises.",
    "complete": "It covers everything from start to finish.",
    "little": "Short enough to read in a few minutes.",
    "honest": "Honest about what does not work.",
    "visual": "Told through pictures and diagrams.",
    "patient": "It takes things slowly and patiently.",
    "radical": "It proposes a radical rethink.",
}
# A republished twin's light edit: the first of these that its text holds (one per sentence template).
REWORDINGS = [
    ("newcomers", "beginners"), ("came about", "began"), ("no background", "no prior knowledge"),
    ("gathered over", "collected over"), ("The usual mistakes", "The common mistakes"),
    ("Both sides", "The two sides"), ("resources and exercises", "exercises and resources"),
    ("what it connects to", "what it links to"), ("Small tricks", "Simple tricks"), ("Popular myths", "Common myths"),
    ("learned the hard way", "learnt the hard way"), ("people who work", "people working"),
    ("a long-time figure", "a well-known figure"), ("in detail", "in depth"), ("anyone serious", "everyone serious"),
]
# the middle parts of a series, in turn
SERIES_STEPS = [
    "Part {k} of the {name} moves on from {previous} to {subject}.",
    "Having covered {previous}, the {name} turns in part {k} to {subject}.",
    "{subject_cap} is the theme of part {k} of the {name}, which picks up where {previous} left off.",
]
SERIES_NAMES = ["Foundations", "Deep dive", "Masterclass", "Walkthrough", "Course", "Chronicle"]
# Bumped whenever the same config generates different data (2: induction replays continue; 3: texts and
# near-duplicates; 4: texts and twins from a generator of their own, so that with p_duplicate=0 the data is
# exactly version 2's), so cached folders of an older generator are never reused.
GENERATOR_VERSION = 4
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
    p_duplicate: float = option(0.1, "share of stand-alone documents republished under a second id with a new "
                                "title (near-duplicates)")

    def __post_init__(self) -> None:
        if not 1 <= self.n_topics <= len(TOPICS):
            raise UserError(f"n_topics must be in 1..{len(TOPICS)}, got {self.n_topics}")
        if self.p_repeat + self.p_revisit + self.p_jump > 1:
            raise UserError("p_repeat + p_revisit + p_jump must be at most 1")
        if self.min_length < 3 or self.max_length < self.min_length:
            raise UserError("need 3 <= min_length <= max_length")
        if not 0 <= self.p_duplicate <= 1:
            raise UserError(f"p_duplicate must be in [0, 1], got {self.p_duplicate}")

    def key(self) -> str:
        spec = {**asdict(self), "generator_version": GENERATOR_VERSION}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Documents: item_id, title, topic, series (-1 if none), part (1-based, 0 if none), n_parts, text (what a
    text encoder reads with the title), duplicate_of (a twin's original item id, '' for every other document).

    Each topic's rows are its stand-alone documents, then the twins among them, then its series. The texts and
    the twins draw from a generator of their own, so that without twins the catalogue and the journeys are
    exactly those of generator version 2 (the random stream of `rng` is the one it had)."""
    import pandas as pd

    text_rng = np.random.default_rng([cfg.seed, 3])
    standalone, series_rows = [], []
    series_id = 0
    for t in range(cfg.n_topics):
        topic = TOPICS[t]
        word, subjects = TOPIC_SUBJECTS[topic]
        pairs = [(a, n) for a in ADJECTIVES for n in NOUNS]
        chosen = rng.choice(len(pairs), size=cfg.docs_per_topic, replace=False)
        # Two documents of a topic that share a subject and a sentence template (noun) embed about as close as
        # near-duplicates do, and nearly so with a shared angle (adjective): each takes a subject not yet used
        # with its noun, then with its adjective, where one is left (then the least used, ties at random).
        usage = np.zeros(len(subjects))
        with_noun = {n: np.zeros(len(subjects)) for n in NOUNS}
        with_adj = {a: np.zeros(len(subjects)) for a in ADJECTIVES}
        for j in chosen:
            a, n = pairs[j]
            s = np.lexsort((text_rng.random(len(subjects)), usage, with_adj[a], with_noun[n]))[0]
            usage[s] += 1
            with_noun[n][s] += 1
            with_adj[a][s] += 1
            text = NOUNS[n][1].format(subject=subjects[s], topic=word) + " " + ANGLES[a]
            standalone.append((dict(title=f"{topic}: the {a} {n}", topic=topic, series=-1, part=0, n_parts=0,
                                    text=text), _retitle(word, a, n)))
        for s in range(cfg.series_per_topic):
            n_parts = int(rng.integers(cfg.series_min_parts, cfg.series_max_parts + 1))
            name = f"{topic} {SERIES_NAMES[s % len(SERIES_NAMES)]}" + (f" {s // len(SERIES_NAMES) + 1}" if s >= len(SERIES_NAMES) else "")
            part_subject = np.resize(text_rng.permutation(len(subjects)), n_parts)  # repeats only past 12 parts
            for k in range(1, n_parts + 1):
                previous = subjects[part_subject[k - 2]] if k > 1 else ""
                text = _series_text(name, word, k, n_parts, subjects[part_subject[k - 1]], previous)
                series_rows.append(dict(title=f"{name}, part {k} of {n_parts}", topic=topic, series=series_id,
                                        part=k, n_parts=n_parts, text=text))
            series_id += 1
    twinned = set(text_rng.choice(len(standalone), size=round(cfg.p_duplicate * len(standalone)), replace=False).tolist())
    rows: list[dict] = []
    id_of: dict[int, str] = {}
    for topic in TOPICS[: cfg.n_topics]:
        mine = [(i, r, retitle) for i, (r, retitle) in enumerate(standalone) if r["topic"] == topic]
        for i, r, _ in mine:
            id_of[i] = f"d{len(rows):05d}"
            rows.append(dict(r, duplicate_of=""))
        rows += [dict(r, title=retitle, text=_reword(r["text"]), duplicate_of=id_of[i])
                 for i, r, retitle in mine if i in twinned]
        rows += [dict(r, duplicate_of="") for r in series_rows if r["topic"] == topic]
    df = pd.DataFrame(rows)
    df.insert(0, "item_id", [f"d{i:05d}" for i in range(len(df))])
    assert df["title"].is_unique
    return df


def _series_text(name: str, word: str, k: int, n_parts: int, subject: str, previous: str) -> str:
    """Part k's text names the series and, after part 1, the subject of part k - 1 (what a reader of the series
    was just reading); consecutive parts word it differently, or they would embed as close as near-duplicates."""
    if k == 1:
        return f"The first of {n_parts} parts of the {name}, a series on {word}, starts with {subject}."
    if k == n_parts:
        return f"The {name} ends with part {k}: after {previous}, a last look at {subject}."
    step = SERIES_STEPS[k % len(SERIES_STEPS)]
    return step.format(k=k, name=name, subject=subject, subject_cap=subject[0].upper() + subject[1:], previous=previous)


def _retitle(word: str, adjective: str, noun: str) -> str:
    """The title a republished twin gets: 'Chess: the quiet primer' → 'A quiet primer on chess'."""
    head = f"{adjective} {noun} {NOUNS[noun][0]} {word}"
    if noun in PLURAL_NOUNS:
        return head[0].upper() + head[1:]
    return ("An " if adjective[0] in "aeiou" or adjective == "honest" else "A ") + head


def _reword(text: str) -> str:
    """A republished text, lightly edited: one phrase reworded."""
    for old, new in REWORDINGS:
        if old in text:
            return text.replace(old, new, 1)
    return text


def generate(cfg: SyntheticConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(log with a `mechanism` column, catalogue, ground truth)."""
    import pandas as pd

    rng = np.random.default_rng(cfg.seed)
    cat = _catalogue(cfg, rng)
    n = len(cat)
    index = {d: i for i, d in enumerate(cat["item_id"])}
    # The journeys are drawn over stories (every document but the twins); emitting a story that has a twin
    # picks either id at even odds, so the two ids split the story's traffic and only the text joins them.
    twin = np.full(n, -1)
    for i, orig in enumerate(cat["duplicate_of"]):
        if orig:
            twin[index[orig]] = i
    story = list(range(n))
    for i, j in enumerate(twin):
        if j >= 0:
            story[j] = i
    is_story = cat["duplicate_of"].to_numpy() == ""
    topic_of = cat["topic"].map({t: i for i, t in enumerate(TOPICS)}).to_numpy()
    by_topic = [np.flatnonzero((topic_of == t) & is_story) for t in range(cfg.n_topics)]
    # Zipf popularity within each topic, in a random order of its stories
    weights = [np.arange(1, len(d) + 1, dtype=float) ** -cfg.zipf_exponent for d in by_topic]
    weights = [w / w.sum() for w in weights]
    by_topic = [rng.permutation(d) for d in by_topic]
    next_part = np.full(n, -1)
    for _, grp in cat[cat["series"] >= 0].groupby("series"):
        idx = grp.sort_values("part").index.to_numpy()
        next_part[idx[:-1]] = idx[1:]
    world = (story, twin.tolist(), by_topic, weights, next_part)

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
            mech, item = _next(cfg, rng, hist, last_mech, topic, topics, world)
            hist.append(item)
            last_mech = mech
            users.append(f"u{u:05d}")
            items.append(cat["item_id"].iat[item])
            times.append(int(t))
            mechs.append(mech)
    log = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times, "mechanism": mechs})
    ids = cat["item_id"].to_numpy()
    series_pairs = [[ids[a], ids[b]] for a, b in enumerate(next_part) if b >= 0]
    truth = {
        "config": asdict(cfg),
        "generator_version": GENERATOR_VERSION,
        "mechanisms": {m: int((log["mechanism"] == m).sum()) for m in MECHANISMS},
        # most popular story first, a twin right after its original
        "topics": {TOPICS[t]: [ids[j] for i in by_topic[t] for j in (i, twin[i]) if j >= 0]
                   for t in range(cfg.n_topics)},
        "series": [g.sort_values("part")["item_id"].tolist() for _, g in cat[cat["series"] >= 0].groupby("series")],
        "series_pairs": series_pairs,
        "duplicate_groups": [[ids[i], ids[j]] for i, j in enumerate(twin) if j >= 0],
        "user_topics": user_topics,
    }
    return log, cat, truth


def _next(cfg, rng, hist, last_mech, topic, topics, world) -> tuple[str, int]:
    story, twin, by_topic, weights, next_part = world
    if not hist:
        return "start", _emit(rng, _topic_doc(rng, topic, by_topic, weights), twin)
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
        # a story read before, with a follower, other than the current one (under either of its ids)
        earlier = [h for h in hist[:-2] if story[h] != story[cur]]
        if earlier:
            return "revisit", _emit(rng, story[earlier[rng.integers(len(earlier))]], twin)
    elif r - cfg.p_revisit < cfg.p_jump:
        others = [t for t in range(cfg.n_topics) if t not in topics]
        if others:
            return "jump", _emit(rng, int(rng.choice(by_topic[others[rng.integers(len(others))]])), twin)
    return "topic", _emit(rng, _topic_doc(rng, topic, by_topic, weights), twin)


def _emit(rng, s: int, twin: list[int]) -> int:
    """The id a story is read under: its own, or its twin's at even odds."""
    return twin[s] if twin[s] >= 0 and rng.random() < 0.5 else s


def _follower(hist: list[int]) -> int | None:
    """What followed the most recent earlier occurrence of the current item (…a b … a → b). The exact id: a
    replay after reading a story under its other id is not an induction (an id-level induction head could not
    predict it)."""
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
