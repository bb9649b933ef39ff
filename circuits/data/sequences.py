"""Per-user item sequences, vocabulary, leave-one-out split, and the preprocessing cache.

Conventions (documented in the README):
- **Order and tie-break.** Each user's interactions are sorted by timestamp with a *stable* sort, so rows
  with equal timestamps keep the order in which they appear in the input file (`tie_break="file"`,
  the default, which preserves the order of already-sequenced logs such as the SASRec ML-1M files), or
  by item id (`tie_break="item"`: numeric ids numerically, otherwise as strings).
- **k-core.** Optional: users and items with fewer than `kcore` interactions are dropped, repeatedly,
  until none is left.
- **Vocabulary.** Index 0 is padding; items get 1..n_items in ascending id order (numeric ids
  numerically), so indices do not depend on row order.
- **Split (leave-one-out).** For users with ≥ 3 interactions: last item = test target, second-to-last =
  validation target, the rest = training. Users with fewer than 3 interactions are training-only.
- **Context.** Models see the most recent `n_ctx` items before the target (left-padded).
- **Pool** (`pool`): `log` (default), the vocabulary is the items of the log; `catalogue`, also every item of
  the item metadata without interactions (documents a text model can recommend, an id model never learns).
- **Cold start** (`cold_items` = f > 0): a share f of the log's items, drawn with `cold_seed`, is held out of
  training: their interactions are dropped except where one is a user's last (the test target), so these
  documents are never seen in training or validation, only as test targets ("cold"). A user left with fewer
  than 3 interactions loses its held-out rows too (a training-only user must not train on them), and a user
  left with none is dropped. Held out after k-core filtering, so the result need not be k-core any more.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from circuits.data.names import POOLS, TIE_BREAKS
from circuits.errors import UserError

PAD_ID = "<pad>"


@dataclass(frozen=True)
class Preprocess:
    kcore: int = 0
    tie_break: str = "file"
    pool: str = "log"
    cold_items: float = 0.0
    cold_seed: int = 0

    def __post_init__(self) -> None:
        if self.tie_break not in TIE_BREAKS:
            raise UserError(f"unknown tie-break {self.tie_break!r} (one of {', '.join(TIE_BREAKS)})")
        if self.kcore < 0:
            raise UserError(f"--kcore must be 0 or more, got {self.kcore}")
        if self.pool not in POOLS:
            raise UserError(f"unknown pool {self.pool!r} (one of {', '.join(POOLS)})")
        if not 0.0 <= self.cold_items < 1.0:
            raise UserError(f"--cold-items must be a share in [0, 1), got {self.cold_items}")


@dataclass
class EvalSplit:
    """Evaluation examples of one split: one row per user with ≥ 3 interactions.

    `history` [n_users, n_ctx] is left-padded; `seen_ptr`/`seen_items` (CSR) list every item of the user's
    full history before the target (not only the last n_ctx), for the "seen items excluded" policy;
    `touched_*` (CSR) lists every item the user ever interacted with (for sampled negatives).
    """

    name: str
    users: np.ndarray  # int64 [n] row index into SequenceDataset.user_ids
    history: np.ndarray  # int64 [n, n_ctx]
    target: np.ndarray  # int64 [n]
    history_times: np.ndarray  # float64 [n, n_ctx]: timestamps of `history` (0 under padding)
    seen_ptr: np.ndarray
    seen_items: np.ndarray
    touched_ptr: np.ndarray
    touched_items: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, rows: np.ndarray, name: str) -> "EvalSplit":
        """The split restricted to `rows` (int indices or a bool mask), CSR lists carried along."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
        seen = _csr_take(self.seen_ptr, self.seen_items, rows)
        touched = _csr_take(self.touched_ptr, self.touched_items, rows)
        return EvalSplit(name, self.users[rows], self.history[rows], self.target[rows], self.history_times[rows],
                         *seen, *touched)


@dataclass
class SequenceDataset:
    """Time-ordered item sequences with their vocabulary and titles (CSR layout: `offsets`, `items`)."""

    name: str
    item_ids: np.ndarray  # str [d_vocab]; [0] = "<pad>"
    titles: np.ndarray  # str [d_vocab]
    user_ids: np.ndarray  # str [n_users]
    offsets: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int64 [n_interactions], vocabulary indices
    timestamps: np.ndarray  # float64 [n_interactions]
    info: dict = field(default_factory=dict)
    # derived values computed once per dataset (train counts, fingerprint, …): the arrays never change
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # --- sizes --------------------------------------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        return len(self.item_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def fingerprint(self) -> str:
        """Content hash of the processed data; a checkpoint is only valid for data with the same one."""
        if "fingerprint" not in self._memo:
            self._memo["fingerprint"] = self._fingerprint()
        return self._memo["fingerprint"]

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.offsets, self.items, self.timestamps):
            h.update(np.ascontiguousarray(a).data)  # the bytes in place (a memory map's pages), not a copy of them
        h.update("\x1f".join(self.item_ids).encode())
        h.update("\x1f".join(self.user_ids).encode())
        return h.hexdigest()[:16]

    @property
    def has_repeats(self) -> bool:
        """Does any user interact with the same item twice? (Decides the default seen-item policy.)"""
        if "has_repeats" in self.info:  # computed when the dataset was built (an out-of-core build cannot afford it twice)
            return bool(self.info["has_repeats"])
        if "has_repeats" in self._memo:
            return self._memo["has_repeats"]
        user = np.repeat(np.arange(self.n_users), self.lengths)
        pairs = np.sort(user.astype(np.int64) * self.d_vocab + self.items)
        self._memo["has_repeats"] = bool((pairs[1:] == pairs[:-1]).any())
        return self._memo["has_repeats"]

    def summary(self) -> dict:
        lengths = self.lengths
        return {
            "name": self.name,
            "users": int(self.n_users),
            "items": int(self.n_items),
            "interactions": int(len(self.items)),
            "median_length": float(np.median(lengths)) if len(lengths) else 0.0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "eval_users": int((lengths >= 3).sum()),
            "has_repeats": bool(self.has_repeats),
            "fingerprint": self.fingerprint,
        }

    # --- lookups ------------------------------------------------------------------------------------
    def user_index(self, user_id: str) -> int:
        hits = np.flatnonzero(self.user_ids == str(user_id))
        if len(hits) == 0:
            raise UserError(f"unknown sequence id {user_id!r} (ids are user ids as in the log, e.g. {self.user_ids[0]!r})")
        return int(hits[0])

    def sequence(self, user_id: str) -> pd.DataFrame:
        """One user's full sequence with titles: position, item_id, title, timestamp, split."""
        u = self.user_index(user_id)
        lo, hi = self.offsets[u], self.offsets[u + 1]
        idx = self.items[lo:hi]
        split = np.array(["train"] * (hi - lo), dtype=object)
        if hi - lo >= 3:
            split[-2:] = ["valid", "test"]
        return pd.DataFrame(
            {
                "position": np.arange(hi - lo),
                "item": idx,
                "item_id": self.item_ids[idx],
                "title": self.titles[idx],
                "timestamp": self.timestamps[lo:hi],
                "split": split,
            }
        )

    def train_counts(self) -> np.ndarray:
        """Occurrences of each item in the training part of all sequences: int64 [d_vocab] (counted once; each
        call returns a copy)."""
        if "train_counts" not in self._memo:
            self._memo["train_counts"] = np.bincount(self.items[self.train_mask()], minlength=self.d_vocab)
        return self._memo["train_counts"].copy()

    def cold_targets(self, split: EvalSplit) -> np.ndarray:
        """bool [len(split)]: the target never occurs in the training part of any sequence (a cold item)."""
        return self.train_counts()[split.target] == 0

    def train_mask(self) -> np.ndarray:
        """bool [n_interactions]: in a training part (every interaction but the last two of users with ≥ 3)."""
        mask = np.ones(len(self.items), dtype=bool)
        ends = self.offsets[1:][self.lengths >= 3]
        mask[ends - 1] = False
        mask[ends - 2] = False
        return mask

    def train_sequences(self) -> list[np.ndarray]:
        mask = self.train_mask()
        return [self.items[lo:hi][mask[lo:hi]] for lo, hi in zip(self.offsets[:-1], self.offsets[1:])]

    def train_transition_mask(self) -> np.ndarray:
        """bool [n_interactions − 1]: is (items[i], items[i + 1]) a consecutive pair inside a training part?"""
        ok = self.train_mask()
        ok = ok[1:] & ok[:-1]
        starts = self.offsets[1:-1]  # a pair (i, i + 1) across users: i + 1 starts a user
        ok[starts[(starts > 0) & (starts < len(self.items))] - 1] = False
        return ok

    def train_transitions(self) -> tuple[np.ndarray, np.ndarray]:
        """(previous item, next item) for every consecutive pair inside the training part."""
        ok = self.train_transition_mask()
        return self.items[:-1][ok], self.items[1:][ok]

    def transition_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Sparse first-order transition counts: (sorted keys a·d_vocab + b, counts) over the training parts."""
        if "transitions" not in self._memo:
            prev, nxt = self.train_transitions()
            keys = np.sort(prev * self.d_vocab + nxt)  # np.sort + run lengths: np.unique is slower at 50M pairs
            first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
            counts = np.diff(np.r_[first, len(keys)])
            self._memo["transitions"] = (keys[first], counts)
        keys, counts = self._memo["transitions"]
        return keys.copy(), counts.copy()

    # --- model inputs -------------------------------------------------------------------------------
    def train_lengths(self) -> np.ndarray:
        """Items in each user's training part: int64 [n_users] (the whole sequence for users with < 3
        interactions, all but the last two otherwise)."""
        lengths = self.lengths
        return lengths - np.where(lengths >= 3, 2, 0)

    def train_users(self, n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
        """(users whose training part has ≥ 2 items, in user order; their number of training targets in a window
        of `n_ctx`, i.e. min(n_ctx, training length − 1)): the rows `train_batch` reads."""
        train_len = self.train_lengths()
        users = np.flatnonzero(train_len >= 2)
        return users, np.minimum(n_ctx, train_len[users] - 1)

    def train_window_rows(self, n_ctx: int, windows: str = "last") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The training windows as rows (users, back, targets): the user's row, how many targets the window
        stops short of the end of the training part (`train_batch`'s `back`), and its number of targets.
        `last`: one window per user of `train_users` (back 0). `all`: also the earlier windows, back to back
        (back = 0, n_ctx, 2 n_ctx, …), so every training target is in exactly one window; user-major, latest
        window first."""
        users, lengths = self.train_users(n_ctx)
        if windows == "last":
            return users, np.zeros(len(users), dtype=np.int64), lengths
        if windows != "all":
            raise ValueError(f"unknown windows {windows!r} (last or all)")
        total = self.train_lengths()[users] - 1  # every target of the training part
        per_user = -(-total // n_ctx)  # ceil
        first = np.repeat(np.cumsum(per_user) - per_user, per_user)
        k = np.arange(int(per_user.sum()), dtype=np.int64) - first  # the window's place from the end
        rows = np.repeat(users, per_user)
        back = k * n_ctx
        return rows, back, np.minimum(n_ctx, np.repeat(total, per_user) - back)

    def train_batch(self, users: np.ndarray, width: int, back: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The training windows of `users`, cut to the last `width` positions (≤ n_ctx; the batch's longest
        window), gathered from the flat arrays: inputs and next-item targets (int64) and the inputs' timestamps
        (float64), left-padded, [len(users), width] each; target 0 = padding (no loss). `back` (per user, default
        0): the window ends that many targets before the end of the training part (`train_window_rows`).

        For a training part s and back b: inputs = s[:-1-b][-width:], targets = s[1:len(s)-b][-width:]."""
        users = np.asarray(users, dtype=np.int64)
        start = self.offsets[users]
        end = start + self.train_lengths()[users] - 1  # the last input's successor is the part's last item
        if back is not None:
            end = end - np.asarray(back, dtype=np.int64)
        idx = end[:, None] - width + np.arange(width)  # input positions, right-aligned at the end
        real = idx >= start[:, None]
        idx = np.where(real, idx, 0)
        inputs = np.where(real, self.items[idx], 0)
        targets = np.where(real, self.items[idx + 1], 0)
        times = np.where(real, self.timestamps[idx], 0.0)
        return inputs, targets, times

    def train_windows(self, n_ctx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training inputs, next-item targets (int64) and the inputs' timestamps (float64), left-padded:
        [n_train_users, n_ctx] each, for every user of `train_users` (training streams them in batches with
        `train_batch` instead; this is the whole table, for small data and tests).

        For a training part s (≥ 2 items): inputs = s[:-1][-n_ctx:], targets = s[1:][-n_ctx:]; target 0 =
        padding (no loss).
        """
        users, _ = self.train_users(n_ctx)
        return self.train_batch(users, n_ctx)

    def eval_users(self) -> np.ndarray:
        """Users with an evaluation target (≥ 3 interactions), in user order: int64 row indices."""
        return np.flatnonzero(self.lengths >= 3)

    def eval_split(self, split: str, n_ctx: int, users: np.ndarray | None = None) -> EvalSplit:
        """Validation (`valid`: target = second-to-last item) or test (`test`: target = last item), for every
        user with ≥ 3 interactions or for `users` (row indices of such users, in the order given; e.g. a sample
        from `sample_eval_users`). Built with array operations from the flat arrays (no per-user loop)."""
        if split not in ("valid", "test"):
            raise UserError(f"unknown split {split!r} (valid or test)")
        back = 2 if split == "valid" else 1
        if users is None:
            users = self.eval_users()
        else:
            users = np.asarray(users, dtype=np.int64)
            if len(users) and (self.lengths[users] < 3).any():
                raise ValueError("eval_split: every user must have at least 3 interactions")
        start, full_end = self.offsets[users], self.offsets[users + 1]
        end = full_end - back  # the history is items[start:end], the target items[end]
        target = np.asarray(self.items[end], dtype=np.int64)
        idx = end[:, None] - n_ctx + np.arange(n_ctx)
        real = idx >= start[:, None]
        idx = np.where(real, idx, 0)
        history = np.where(real, self.items[idx], 0).astype(np.int64)
        history_times = np.where(real, self.timestamps[idx], 0.0)
        seen = _unique_segments(self.items, start, end, self.d_vocab)
        touched = _unique_segments(self.items, start, full_end, self.d_vocab)
        return EvalSplit(split, users, history, target, history_times, *seen, *touched)


def sample_eval_users(ds: SequenceDataset, n: int | None, seed: int = 0) -> np.ndarray | None:
    """A seeded uniform sample of `n` of the users with an evaluation target, as sorted row indices; None (all
    users) when `n` is 0/None or at least their number. The same (data, n, seed) always gives the same users."""
    eligible = ds.eval_users()
    if not n or n >= len(eligible):
        return None
    if n < 0:
        raise UserError(f"--eval-users must be 0 (all) or more, got {n}")
    return np.sort(np.random.default_rng([seed, n]).choice(eligible, size=n, replace=False))


def _segment_index(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of every segment items[start[r]:end[r]] laid end to end, the CSR pointer of the segments)."""
    lens = np.maximum(end - start, 0).astype(np.int64)
    ptr = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=ptr[1:])
    pos = np.arange(ptr[-1], dtype=np.int64) - np.repeat(ptr[:-1] - start, lens)
    return pos, ptr


def _unique_segments(values: np.ndarray, start: np.ndarray, end: np.ndarray, d_vocab: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr, items) of the sorted distinct values of each segment values[start[r]:end[r]]."""
    pos, ptr = _segment_index(start, end)
    row = np.repeat(np.arange(len(start), dtype=np.int64), np.diff(ptr))
    keys = np.sort(row * d_vocab + values[pos])  # by row, then value (np.sort + diff: np.unique is slower)
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    out_ptr = np.zeros(len(start) + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // d_vocab, minlength=len(start)), out=out_ptr[1:])
    return out_ptr, keys % d_vocab


def _csr_take(ptr: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR lists of `rows`, in that order."""
    pos, out_ptr = _segment_index(ptr[rows], ptr[rows + 1])
    return out_ptr, items[pos]


def _csr(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(r) for r in rows])
    items = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, dtype=np.int64)
    return ptr, items


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    """Unique ids in natural order: numerically if every id is an integer, else as strings."""
    uniq = pd.unique(ids)
    numeric = pd.to_numeric(pd.Series(uniq), errors="coerce")
    if numeric.notna().all() and (numeric % 1 == 0).all():
        return uniq[np.argsort(numeric.to_numpy(), kind="stable")]
    return np.sort(uniq.astype(str))


def kcore_filter(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than k interactions, repeatedly, until stable."""
    while k > 0:
        keep = (df.groupby("user")["item"].transform("size") >= k) & (
            df.groupby("item")["user"].transform("size") >= k
        )
        if keep.all():
            break
        df = df[keep]
    return df


def build_dataset(
    df: pd.DataFrame, titles: dict[str, str], name: str, pre: Preprocess = Preprocess()
) -> SequenceDataset:
    """Normal-form log (file order) → SequenceDataset, following the module's conventions."""
    n_raw = len(df)
    df = kcore_filter(df.reset_index(drop=True), pre.kcore)
    if df.empty:
        raise UserError(f"{name}: no interactions left after {pre.kcore}-core filtering (of {n_raw})")
    log_ids = df["item"].to_numpy()
    if pre.pool == "catalogue":
        if not titles:
            raise UserError(f"{name}: --pool catalogue needs item metadata (--items), and there is none")
        log_ids = np.concatenate([log_ids, np.asarray(list(titles), dtype=object)])
    item_ids = _sorted_ids(log_ids)
    item_index = pd.Index(item_ids)
    items = item_index.get_indexer(df["item"].to_numpy()) + 1
    user_codes, user_ids = pd.factorize(df["user"], sort=False)  # users in order of first appearance
    frame = pd.DataFrame({"u": user_codes, "t": df["timestamp"].to_numpy(), "i": items})
    sort_keys = ["u", "t"] if pre.tie_break == "file" else ["u", "t", "i"]
    frame = frame.sort_values(sort_keys, kind="stable")
    info: dict = {}
    if pre.cold_items > 0:
        frame, info = _hold_out_items(frame, np.unique(items), pre.cold_items, pre.cold_seed)
        kept = np.unique(frame["u"].to_numpy())  # a user whose every interaction was held out is gone
        code = np.full(len(user_ids), -1, dtype=np.int64)
        code[kept] = np.arange(len(kept))  # codes stay in order of first appearance
        frame, user_ids = frame.assign(u=code[frame["u"].to_numpy()]), user_ids[kept]
    lengths = np.bincount(frame["u"].to_numpy(), minlength=len(user_ids))
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    all_ids = np.concatenate([[PAD_ID], item_ids.astype(str)]).astype(object)
    all_titles = np.array([PAD_ID] + [titles.get(i, f"item {i}") for i in item_ids.astype(str)], dtype=object)
    return SequenceDataset(
        name=name,
        item_ids=all_ids,
        titles=all_titles,
        user_ids=np.asarray(user_ids).astype(str).astype(object),
        offsets=offsets,
        items=frame["i"].to_numpy().astype(np.int64),
        timestamps=frame["t"].to_numpy().astype(np.float64),
        info={"rows_read": n_raw, "rows_kept": len(frame), **asdict(pre), **info},
    )


def _hold_out_items(
    frame: pd.DataFrame, log_items: np.ndarray, share: float, seed: int
) -> tuple[pd.DataFrame, dict]:
    """The cold-start split (module docstring): `frame` (u, t, i; sorted, each user's rows in order) without
    the held-out items' rows except users' last ones; and what was done, for the dataset's info."""
    rng = np.random.default_rng(seed)
    held = rng.choice(log_items, size=max(1, round(share * len(log_items))), replace=False)
    cold = np.isin(frame["i"].to_numpy(), held)
    user = frame["u"].to_numpy()
    last = np.r_[user[1:] != user[:-1], True]  # the last row of each user
    frame = frame[~cold | last]
    cold = np.isin(frame["i"].to_numpy(), held)
    user = frame["u"].to_numpy()
    short = np.bincount(user)[user] < 3  # training-only users must not hold a held-out item
    frame = frame[~(cold & short)]
    user = frame["u"].to_numpy()
    n_cold_targets = int((np.isin(frame["i"].to_numpy(), held) & np.r_[user[1:] != user[:-1], True]).sum())
    return frame, {"cold_items_held_out": int(len(held)), "cold_test_targets": n_cold_targets}


# --- cache ------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("CIRCUITS_CACHE", Path.home() / ".cache" / "circuits")).expanduser()
