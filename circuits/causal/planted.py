"""Data with a planted cluster DAG, to check that discovery finds structure where there is some.

Items belong to `n_clusters` clusters of `items_per_cluster` items each (item id `c007-i03`: item 3 of cluster
7). A random DAG over the clusters (`dag.random_dag`, expected `mean_children` children per cluster) is the
truth. Every user starts in a uniformly random cluster and then, at each step:

- with probability `p_follow`, and if the current cluster has children, moves to one of them (uniformly);
- else with probability `p_stay` stays in the cluster;
- else jumps to a uniformly random cluster (a fresh start);

and reads a uniformly random item of the cluster it is in. Journeys have `min_length`..`max_length` steps.

Controls (`order`), from the same draws, so that they are "the same data with the order removed":
- `shuffled`: each user's interactions in a random order (timestamps stay in place). The user × cluster
  matrix is exactly the planted one's: anything discovered from it cannot come from the order;
- `independent`: the clusters of all interactions permuted across users (items re-drawn within the new
  cluster), so each cluster keeps its number of interactions and each user its length, but which clusters a user
  reads together is random: no structure at all.

Vectorised over users (a loop over the steps only).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Bool, Int

from circuits.causal.dag import random_dag
from circuits.config import option
from circuits.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from circuits.data.sequences import SequenceDataset

ORDERS = ("planted", "shuffled", "independent")


@dataclass(frozen=True)
class PlantedConfig:
    """What `planted_log` makes (module docstring)."""

    n_clusters: int = option(20, "clusters (nodes of the planted DAG)")
    items_per_cluster: int = option(10, "items in each cluster")
    mean_children: float = option(1.5, "expected children per cluster in the planted DAG")
    n_users: int = option(2000, "users")
    min_length: int = option(10, "shortest journey (at least 3)")
    max_length: int = option(30, "longest journey")
    p_follow: float = option(0.6, "probability of moving to a child cluster")
    p_stay: float = option(0.3, "probability of staying in the cluster (else: a jump to a random cluster)")
    order: str = option("planted", "planted, or a control: shuffled (each user's order) or independent "
                        "(clusters permuted across users)", choices=ORDERS)
    seed: int = option(0, "generator seed")

    def __post_init__(self) -> None:
        if self.n_clusters < 2 or self.items_per_cluster < 1 or self.n_users < 1:
            raise UserError("need n_clusters ≥ 2, items_per_cluster ≥ 1, n_users ≥ 1")
        if not 3 <= self.min_length <= self.max_length:
            raise UserError("need 3 ≤ min_length ≤ max_length")
        if self.p_follow < 0 or self.p_stay < 0 or self.p_follow + self.p_stay > 1:
            raise UserError("need p_follow, p_stay ≥ 0 and p_follow + p_stay ≤ 1")
        if self.order not in ORDERS:
            raise UserError(f"unknown order {self.order!r} (one of {', '.join(ORDERS)})")
        if self.mean_children < 0:
            raise UserError("mean_children must be 0 or more")


@dataclass
class PlantedData:
    """The log (user_id, item_id, timestamp; time order within each user), the item table (item_id, title,
    cluster), the planted DAG over clusters (bool [k, k], edge a → b at [a, b]; the same for the controls) and
    the config."""

    log: pd.DataFrame
    items: pd.DataFrame
    dag: Bool[np.ndarray, "k k"]
    config: PlantedConfig

    def dataset(self) -> SequenceDataset:
        from circuits.data.sequences import build_dataset

        df = self.log.rename(columns={"user_id": "user", "item_id": "item"})
        titles = dict(zip(self.items["item_id"], self.items["title"]))
        return build_dataset(df, titles, f"planted ({self.config.order}, seed {self.config.seed})")

    def item_cluster(self, ds: SequenceDataset) -> Int[np.ndarray, " d_vocab"]:
        """The true cluster of each vocabulary index of `ds` (−1 for padding)."""
        from circuits.causal.clusters import clusters_by_id

        return clusters_by_id(self.items["item_id"], self.items["cluster"], ds)


def planted_walks(cfg: PlantedConfig, dag: Bool[np.ndarray, "k k"], rng: np.random.Generator
                  ) -> tuple[Int[np.ndarray, "n_users max_length"], Int[np.ndarray, " n_users"]]:
    """(cluster of each user's each step [n_users, max_length], each user's length): the walks of the module
    docstring, one numpy step for all users at a time."""
    k, n = cfg.n_clusters, cfg.n_users
    n_children = dag.sum(1)
    child_ptr = np.r_[0, np.cumsum(n_children)]
    children = np.nonzero(dag)[1]  # row-major: the children of cluster a are children[child_ptr[a]:child_ptr[a+1]]
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=n)
    walk = np.empty((n, cfg.max_length), dtype=np.int64)
    cur = rng.integers(k, size=n)
    for t in range(cfg.max_length):
        walk[:, t] = cur
        r, pick, jump = rng.random(n), rng.random(n), rng.integers(k, size=n)
        follow = (r < cfg.p_follow) & (n_children[cur] > 0)
        stay = ~follow & (r >= cfg.p_follow) & (r < cfg.p_follow + cfg.p_stay)
        child = children[np.minimum(child_ptr[cur] + (pick * n_children[cur]).astype(np.int64),
                                    max(len(children) - 1, 0))] if len(children) else cur
        cur = np.where(follow, child, np.where(stay, cur, jump))
    return walk, lengths


def planted_log(cfg: PlantedConfig = PlantedConfig()) -> PlantedData:
    """The planted data or one of its controls (module docstring); a deterministic function of `cfg`."""
    import pandas as pd

    rng = np.random.default_rng(cfg.seed)
    k = cfg.n_clusters
    dag = random_dag(k, min(1.0, 2 * cfg.mean_children / (k - 1)), rng)
    walk, lengths = planted_walks(cfg, dag, rng)
    real = np.arange(cfg.max_length)[None, :] < lengths[:, None]
    user = np.repeat(np.arange(cfg.n_users), lengths)
    step = np.nonzero(real)[1]
    cluster = walk[real]  # user-major, in step order
    item = rng.integers(cfg.items_per_cluster, size=len(cluster))
    control_rng = np.random.default_rng([cfg.seed, 1])  # the controls' draws leave the planted ones untouched
    if cfg.order == "shuffled":
        order = np.lexsort((control_rng.random(len(user)), user))  # within each user, a random order
        cluster, item = cluster[order], item[order]
    elif cfg.order == "independent":
        cluster = control_rng.permutation(cluster)
        item = control_rng.integers(cfg.items_per_cluster, size=len(cluster))
    width = len(str(cfg.items_per_cluster - 1))
    cwidth = len(str(k - 1))
    ids = np.array([f"c{c:0{cwidth}d}-i{i:0{width}d}" for c in range(k) for i in range(cfg.items_per_cluster)])
    items = pd.DataFrame({"item_id": ids, "title": [f"cluster {c} item {i}" for c in range(k)
                                                     for i in range(cfg.items_per_cluster)],
                          "cluster": np.repeat(np.arange(k), cfg.items_per_cluster)})
    uwidth = len(str(cfg.n_users - 1))
    log = pd.DataFrame({"user_id": np.char.add("u", np.char.zfill(user.astype(str), uwidth)),
                        "item_id": ids[cluster * cfg.items_per_cluster + item],
                        "timestamp": 1_735_689_600 + user * 86_400 + step * 60})
    return PlantedData(log, items, dag, cfg)


def write_planted(data: PlantedData, out: str | Path) -> Path:
    """interactions.tsv.gz, items.tsv (with `cluster`) and ground_truth.json (`cluster_dag`: [a, b] edges, the
    config) into `out`, atomically (a folder any command reads as a log; `--labels cluster` gives the true
    clusters)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    data.log.to_csv(tmp / "interactions.tsv.gz", sep="\t", index=False)
    data.items.to_csv(tmp / "items.tsv", sep="\t", index=False)
    truth = {"config": asdict(data.config), "n_clusters": int(len(data.dag)),
             "cluster_dag": np.argwhere(data.dag).tolist()}
    (tmp / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def planted_dag_of(folder: str | Path) -> Bool[np.ndarray, "k k"] | None:
    """The planted cluster DAG of a folder written by `write_planted` (or a file in it); None for other data."""
    folder = Path(folder)
    path = (folder if folder.is_dir() else folder.parent) / "ground_truth.json"
    if not path.exists():
        return None
    truth = json.loads(path.read_text())
    if "cluster_dag" not in truth:
        return None
    dag = np.zeros((truth["n_clusters"], truth["n_clusters"]), dtype=bool)
    for a, b in truth["cluster_dag"]:
        dag[a, b] = True
    return dag
