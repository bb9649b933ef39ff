"""GOLEM (Ng, Ghassami & Zhang, "On the role of sparsity and DAG constraints for learning linear DAGs",
NeurIPS 2020): a linear DAG B [d, d] with X ≈ X B (row-vector convention: X [n_samples, d], B[i, j] the
weight of edge i → j), found by unconstrained minimisation of the score

    S(B; X) = L(B; X) + λ₁ ‖B‖₁ + λ₂ h(B),   h(B) = tr(exp(B ∘ B)) − d   (0 exactly when B is a DAG)

    GOLEM-EV (equal noise variances):   L = d/2 · log ‖X − X B‖²_F − log |det(I − B)|
    GOLEM-NV (non-equal variances):     L = 1/2 · Σ_j log ‖X_j − X B_j‖² − log |det(I − B)|

(the Gaussian negative log-likelihood with the noise variances profiled out, divided by n, constants dropped;
the paper's equations (4)–(6), λ₁ = 2·10⁻² for EV and 2·10⁻³ for NV, λ₂ = 5, Adam with learning rate 10⁻³,
10⁵ iterations, B starting at 0, edges kept where |B| > 0.3, then the weakest removed until acyclic).

The objective is gcastle's `GolemModel` (castle/algorithms/gradient/notears/torch/golem_utils/golem_model.py,
a port of the paper's own TensorFlow code; checked term by term against the equations above in
`tests/test_causal.py`); the optimisation is our loop: Adam, a time budget, progress, a loss history, and the
EV-then-NV warm start the paper recommends for NV (`variant="nv-warm"`). gcastle's own trainer has no time
budget. The module file is loaded by its path, not through `castle`'s package: importing `castle` sets the root
logger to INFO (`logging.basicConfig`) and imports every algorithm and matplotlib (seconds).

Data preparation: columns are centred (the paper assumes zero-mean data, and its code centres X; gcastle's
`GOLEM.learn` does not), and with `scale="standardize"` also divided by their standard deviation (not the
paper's choice: under EV, scale carries information about the order, and standardising removes it).
The likelihood depends on X only through the Gram matrix S = XᵀX: ‖X − XB‖²_F = ‖R − RB‖²_F · n for any
R [d, d] with RᵀR = S / n. When n > d the fit runs on such an R (from an eigendecomposition of S / n), so
an iteration costs O(d³) instead of O(n d²) and a sparse X is never densified; the score then differs from
the one on X by the constant d/2 · log n (same minimiser, same gradients).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Bool, Float

from circuits.config import option
from circuits.errors import UserError

if TYPE_CHECKING:  # imported where used: a command's `--help` needs neither
    import pandas as pd
    import scipy.sparse as sp

VARIANTS = ("ev", "nv", "nv-warm")
SCALES = ("center", "standardize")
DTYPES = ("float32", "float64")
PAPER_LAMBDA_1 = {"ev": 2e-2, "nv": 2e-3}
ONE_THREAD_BELOW = 128  # CPU fits with fewer variables run in one thread
GOLEM_MODEL_FILE = "algorithms/gradient/notears/torch/golem_utils/golem_model.py"
CONVERGENCE_WINDOW = 1000  # steps between two scores compared by the convergence test


@dataclass(frozen=True)
class GolemConfig:
    """One GOLEM fit; every field is a flag of `python -m analyses.causal`."""

    variant: str = option("ev", "likelihood: ev (equal noise variances), nv (non-equal), nv-warm (EV first, then NV "
                          "started from its solution, as the paper recommends for NV)", choices=VARIANTS)
    lambda_1: float | None = option(None, "L1 weight λ₁ (default: the paper's, 0.02 for EV and 0.002 for NV)",
                                    type=float)
    lambda_2: float = option(5.0, "weight λ₂ of the acyclicity penalty h(B)")
    learning_rate: float = option(1e-3, "Adam learning rate")
    iterations: int = option(100_000, "Adam steps (per stage with nv-warm)")
    max_minutes: float = option(0.0, "time budget in minutes for the whole fit (0: none; nv-warm gives EV half)")
    # the paper's 0.3 suits its Gaussian data (weights ±0.5–2); between binary user × cluster columns the weights
    # are near 0.13, and on planted cluster DAGs 0.3 finds 20–43% of the edges, 0.1 finds 63–93% at FDR ≤ 0.07
    # (benchmarks/causal_recovery.py; README)
    threshold: float = option(0.1, "edges kept where |B| > threshold, then the weakest removed until acyclic (0.1: "
                              "binary user × cluster data; the paper's 0.3 is for weights of Gaussian data)")
    scale: str = option("center", "column preparation: center (the paper's) or standardize", choices=SCALES)
    init_std: float = option(0.0, "B starts at 0 (the paper's) or, if > 0, at N(0, init_std²) drawn with --seed")
    seed: int = option(0, "seed of a random start (GOLEM is otherwise deterministic: full batch, B = 0 at start)")
    device: str = option("cpu", "torch device: cpu or cuda")
    dtype: str = option("float32", "floating point type of the fit", choices=DTYPES)
    log_every: int = option(100, "iterations between two rows of the loss history")
    tol: float = option(1e-6, "a stage stops once its score fell by less than tol × |score| over the last "
                        f"{CONVERGENCE_WINDOW:,} steps (0: never; the paper runs every iteration)")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"unknown GOLEM variant {self.variant!r} (one of {', '.join(VARIANTS)})")
        if self.scale not in SCALES:
            raise UserError(f"unknown scale {self.scale!r} (one of {', '.join(SCALES)})")
        if self.dtype not in DTYPES:
            raise UserError(f"unknown dtype {self.dtype!r} (one of {', '.join(DTYPES)})")
        for name in ("lambda_2", "max_minutes", "threshold", "init_std", "tol"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.lambda_1 is not None and self.lambda_1 < 0:
            raise UserError(f"--lambda-1 must be 0 or more, got {self.lambda_1}")
        if self.learning_rate <= 0 or self.iterations < 0 or self.log_every < 1:
            raise UserError("need --learning-rate > 0, --iterations ≥ 0 and --log-every ≥ 1")

    def stages(self) -> list[tuple[str, float]]:
        """(likelihood, λ₁) of each stage: one, or EV then NV for nv-warm."""
        names = ["ev", "nv"] if self.variant == "nv-warm" else [self.variant]
        return [(s, PAPER_LAMBDA_1[s] if self.lambda_1 is None else self.lambda_1) for s in names]


@dataclass
class GolemResult:
    """A GOLEM fit. `B` is the optimiser's estimate (diagonal 0); `weights` is B after thresholding and the
    acyclicity step (`dag_cut` > 0 when that step removed edges); `dag` = weights ≠ 0, a DAG. Edge i → j at
    [i, j] throughout (X ≈ X B). `history`: one row per `log_every` iterations and stage (stage, iteration,
    score, likelihood, l1, h, seconds); `iterations`: steps done per stage; `stopped`: "time" if a stage ran out
    of time, else the last stage's reason: "iterations" or "converged" (`tol`).
    `columns` names the d variables (cluster ids when the columns are clusters)."""

    B: Float[np.ndarray, "d d"]
    weights: Float[np.ndarray, "d d"]
    dag: Bool[np.ndarray, "d d"]
    threshold: float
    dag_cut: float
    history: list[dict]
    seconds: float
    iterations: dict[str, int]
    stopped: str
    config: dict
    columns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def history_table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.history, columns=["stage", "iteration", "score", "likelihood", "l1", "h", "seconds"])

    def edges(self) -> pd.DataFrame:
        """One row per edge of the DAG: source, target (entries of `columns`), weight; strongest |weight| first."""
        import pandas as pd

        src, dst = np.nonzero(self.dag)
        w = self.weights[src, dst]
        order = np.argsort(-np.abs(w), kind="stable")
        cols = self.columns if len(self.columns) else np.arange(len(self.B))
        return pd.DataFrame({"source": cols[src[order]], "target": cols[dst[order]], "weight": w[order]})

    def summary(self) -> dict:
        return {"edges": int(self.dag.sum()), "variables": int(len(self.B)), "threshold": self.threshold,
                "dag_cut": self.dag_cut, "seconds": round(self.seconds, 3), "iterations": dict(self.iterations),
                "stopped": self.stopped, "h_final": self.history[-1]["h"] if self.history else None,
                "config": self.config}


# --- gcastle's objective ------------------------------------------------------------------------------------

@functools.cache
def golem_model_class():
    """gcastle's `GolemModel`, loaded from its file once (module docstring: why not through the package)."""
    spec = importlib.util.find_spec("castle")  # finds the package without running its __init__
    path = Path(spec.submodule_search_locations[0]) / GOLEM_MODEL_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.exists():
        raise UserError("GOLEM needs gcastle (its GolemModel): pip install gcastle==1.0.4")
    mod_spec = importlib.util.spec_from_file_location("circuits_causal_gcastle_golem_model", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.GolemModel


def _golem_model(*args, **kwargs):
    return golem_model_class()(*args, **kwargs)


def golem_score(B: Float[np.ndarray, "d d"], X: Float[np.ndarray, "n d"], lambda_1: float, lambda_2: float,
                equal_variances: bool) -> dict[str, float]:
    """gcastle's score of B on X as given (no centring), in float64: score, likelihood, l1, h."""
    import torch

    X_t = torch.as_tensor(np.asarray(X, dtype=np.float64))
    model = _golem_model(len(X), X.shape[1], lambda_1, lambda_2, equal_variances, B_init=np.asarray(B, np.float64))
    with torch.no_grad():
        model(X_t)
    return {"score": float(model.score), "likelihood": float(model.likelihood), "l1": float(model.L1_penalty),
            "h": float(model.h)}


# --- data preparation ---------------------------------------------------------------------------------------

def prepared_gram(X: Float[np.ndarray, "n d"] | sp.spmatrix, scale: str = "center"
                  ) -> tuple[Float[np.ndarray, "d d"], int]:
    """(S / n, n): the Gram matrix of X's columns after centring (and, with `standardize`, scaling each to unit
    standard deviation), divided by the number of rows; from a scipy.sparse X without densifying it. A column
    with zero variance is an error (its NV likelihood is unbounded; the caller drops such columns first)."""
    n = X.shape[0]
    if n < 2:
        raise UserError(f"GOLEM needs at least 2 samples, got {n}")
    if hasattr(X, "tocsr"):
        X = X.tocsr().astype(np.float64)
        mean = np.asarray(X.mean(0)).ravel()
        gram = (X.T @ X).toarray() / n - np.outer(mean, mean)
    else:
        X = np.asarray(X, dtype=np.float64)
        Xc = X - X.mean(0)
        gram = Xc.T @ Xc / n
    var = np.diag(gram).copy()
    constant = np.flatnonzero(var <= 1e-12 * max(1.0, float(var.max(initial=0.0))))
    if len(constant):
        raise UserError(f"GOLEM: {len(constant)} column(s) without variance (e.g. {constant[:5].tolist()}); drop them")
    if scale == "standardize":
        sd = np.sqrt(var)
        gram = gram / np.outer(sd, sd)
    return (gram + gram.T) / 2, n


def gram_root(gram: Float[np.ndarray, "d d"]) -> Float[np.ndarray, "d d"]:
    """R with Rᵀ R = gram (gram symmetric positive semi-definite): R = diag(√λ) Vᵀ from gram = V diag(λ) Vᵀ."""
    lam, V = np.linalg.eigh(gram)
    return np.sqrt(np.clip(lam, 0.0, None))[:, None] * V.T


def prepared_data(X: Float[np.ndarray, "n d"] | sp.spmatrix, scale: str = "center") -> Float[np.ndarray, "m d"]:
    """What the fit runs on: the centred (scaled) X itself when n ≤ d, else the root R [d, d] of its Gram
    matrix / n (module docstring: same minimiser and gradients, O(d³) per iteration)."""
    n, d = X.shape
    if n <= d:
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        prepared_gram(X, scale)  # the same checks
        Xc = X - X.mean(0)
        if scale == "standardize":
            Xc = Xc / Xc.std(0)
        return Xc
    gram, _ = prepared_gram(X, scale)
    return gram_root(gram)


# --- the optimisation ---------------------------------------------------------------------------------------

def stage_budget(max_minutes: float, n_stages: int, stage: int, spent_seconds: float) -> float:
    """Seconds a stage may run: with no budget (0) unlimited; else an even share of what is left for the
    stages still to run (nv-warm: EV gets half, NV the rest, including what EV did not use)."""
    if max_minutes <= 0:
        return math.inf
    left = max_minutes * 60 - spent_seconds
    return max(0.0, left / (n_stages - stage))


def should_stop(iteration: int, iterations: int, elapsed: float, budget: float, score: float | None = None,
                previous: float | None = None, tol: float = 0.0) -> str | None:
    """Why a stage stops before its next step, if it does: its steps are done, its time is up, or (`score` now,
    `previous` = the score `CONVERGENCE_WINDOW` steps ago) it fell by less than tol × |previous| since."""
    if iteration >= iterations:
        return "iterations"
    if elapsed >= budget:
        return "time"
    if tol > 0 and previous is not None and score is not None and previous - score <= tol * abs(previous):
        return "converged"
    return None


def fit_golem(X: Float[np.ndarray, "n d"] | sp.spmatrix, cfg: GolemConfig = GolemConfig(), *,
              columns: np.ndarray | None = None, progress: bool = True) -> GolemResult:
    """GOLEM on the samples X [n_samples, d] (dense or scipy.sparse; rows are samples, e.g. users) with `cfg`
    (see `GolemConfig` and the module docstring); `columns` names the variables in the result."""
    import torch

    from circuits.interp.threads import one_thread

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {cfg.device}: no CUDA device here")
    dtype = getattr(torch, cfg.dtype)
    data = torch.as_tensor(prepared_data(X, cfg.scale), dtype=dtype, device=cfg.device)
    n, d = X.shape
    start = time.perf_counter()
    B0 = np.zeros((d, d))
    if cfg.init_std > 0:
        B0 = np.random.default_rng(cfg.seed).normal(0.0, cfg.init_std, (d, d))
        np.fill_diagonal(B0, 0.0)
    # small fits in one thread (see circuits.interp.threads: barriers wait for busy cores); large d keeps them all
    threads = one_thread() if cfg.device == "cpu" and d < ONE_THREAD_BELOW else nullcontext()
    with threads:
        B, history, done, stopped = _optimise(data, n, d, B0, cfg, progress)
    from circuits.causal.dag import threshold_to_dag

    weights, cut = threshold_to_dag(B, cfg.threshold)
    return GolemResult(B=B, weights=weights, dag=weights != 0, threshold=cfg.threshold, dag_cut=cut,
                       history=history, seconds=time.perf_counter() - start, iterations=done, stopped=stopped,
                       config=asdict(cfg),
                       columns=np.arange(d) if columns is None else np.asarray(columns))


def _optimise(data, n: int, d: int, B0: np.ndarray, cfg: GolemConfig, progress: bool
              ) -> tuple[np.ndarray, list[dict], dict[str, int], str]:
    """Adam on gcastle's score, stage by stage: (B, loss history, steps per stage, why the last stage stopped)."""
    import torch
    from tqdm.auto import tqdm

    history: list[dict] = []
    done: dict[str, int] = {}
    stopped = "iterations"
    start = time.perf_counter()
    stages = cfg.stages()
    B = B0
    for s, (likelihood, lambda_1) in enumerate(stages):
        budget = stage_budget(cfg.max_minutes, len(stages), s, time.perf_counter() - start)
        model = _golem_model(n, d, lambda_1, cfg.lambda_2, likelihood == "ev", B_init=B.astype(cfg.dtype),
                             device=torch.device(cfg.device))
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        stage_start = time.perf_counter()
        bar = tqdm(total=cfg.iterations, desc=f"GOLEM-{likelihood.upper()} (d={d})", disable=not progress,
                   leave=False, mininterval=1.0)
        i = 0
        previous = None
        while True:
            model(data)
            check = i > 0 and i % CONVERGENCE_WINDOW == 0
            score = model.score.item() if check else None
            why = should_stop(i, cfg.iterations, time.perf_counter() - stage_start, budget, score, previous, cfg.tol)
            if check:
                previous = score
            if i % cfg.log_every == 0 or why is not None:
                row = {"stage": likelihood, "iteration": i, "score": model.score.item(),
                       "likelihood": model.likelihood.item(), "l1": model.L1_penalty.item(), "h": model.h.item(),
                       "seconds": time.perf_counter() - start}
                if not history or history[-1]["stage"] != likelihood or history[-1]["iteration"] != i:
                    history.append(row)
                bar.set_postfix(score=f"{row['score']:.4g}", h=f"{row['h']:.2g}", refresh=False)
            if why is not None:
                break
            optimizer.zero_grad(set_to_none=True)
            model.score.backward()
            optimizer.step()
            i += 1
            bar.update(1)
        bar.close()
        if not math.isfinite(history[-1]["score"]):
            raise UserError(f"GOLEM-{likelihood.upper()} diverged (score {history[-1]['score']}); lower "
                            "--learning-rate or drop near-constant columns")
        done[likelihood] = i
        stopped = "time" if why == "time" or stopped == "time" else why
        B = model.B.detach().cpu().numpy().astype(np.float64)
    return B, history, done, stopped
