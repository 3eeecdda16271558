"""Bayesian probabilistic matrix factorization sampled by Gibbs sampling (Salakhutdinov & Mnih, 2008).

r_ui ≈ mu + b_u + c_i + p_u·q_i with Gaussian priors whose means and precisions get Normal-Wishart hyperpriors,
biases sampled jointly with the factors (an extra column of ones), and the noise precision sampled too. The
sampler's state (current draw, kept draws, RNG) is checkpointed as safetensors + JSON and resumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load, save_file

from luodi import crypto
from luodi.atomic import atomic_path, write_json


class Side:
    """The ratings seen from one side (users or items) as a fixed CSR layout: rows x other-side columns."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int):
        self.order = np.lexsort((cols, rows))
        self.indices = cols[self.order]
        self.indptr = np.searchsorted(rows[self.order], np.arange(n_rows + 1))
        self.shape = (n_rows, n_cols)
        self.ones = self.matrix(np.ones(len(rows)))

    def matrix(self, values: np.ndarray):
        from scipy.sparse import csr_matrix

        return csr_matrix((values[self.order], self.indices, self.indptr), shape=self.shape)


def sample_hyper(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Normal-Wishart posterior draw of (mean, precision) of the rows of x (mu0 = 0, beta0 = 2, W0 = I)."""
    from scipy.stats import wishart

    n, d = x.shape
    beta0, nu0 = 2.0, d
    xbar = x.mean(0)
    s = np.cov(x, rowvar=False, bias=True)
    w_inv = np.eye(d) + n * s + beta0 * n / (beta0 + n) * np.outer(xbar, xbar)
    w = np.linalg.inv((w_inv + w_inv.T) / 2)
    lam = wishart(df=nu0 + n, scale=(w + w.T) / 2).rvs(random_state=rng)
    mu = rng.multivariate_normal(n * xbar / (beta0 + n), np.linalg.inv((beta0 + n) * lam))
    return mu, lam


def sample_rows(
    side: Side,
    other: np.ndarray,
    target: np.ndarray,
    alpha: float,
    mu: np.ndarray,
    lam: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw each row's vector from its Gaussian conditional given the other side's vectors `other`
    (n_other, d) and the targets of the ratings."""
    n, d = side.shape[0], other.shape[1]
    outer = (other[:, :, None] * other[:, None, :]).reshape(len(other), d * d)
    prec = lam[None] + alpha * np.asarray(side.ones @ outer).reshape(n, d, d)
    rhs = (lam @ mu)[None] + alpha * np.asarray(side.matrix(target) @ other)
    mean = np.linalg.solve(prec, rhs[..., None])[..., 0]
    chol = np.linalg.cholesky(prec)
    z = rng.standard_normal((n, d, 1))
    return mean + np.linalg.solve(np.transpose(chol, (0, 2, 1)), z)[..., 0]


class BPMF:
    """State of the sampler: current draw, and the kept draws (every `thin`-th after `burn_in`)."""

    def __init__(self, n_users: int, n_items: int, factors: int, seed: int):
        self.rng = np.random.default_rng(seed)
        k = factors
        self.P = self.rng.normal(0, 0.1, (n_users, k + 1))  # factors + user bias (last column)
        self.Q = self.rng.normal(0, 0.1, (n_items, k + 1))  # factors + item bias (last column)
        self.P[:, -1] = 0
        self.Q[:, -1] = 0
        self.alpha = 2.0
        self.kept_p: list[np.ndarray] = []
        self.kept_q: list[np.ndarray] = []
        self.iteration = 0
        self.sides: tuple[Side, Side] | None = None

    def step(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        """One Gibbs sweep over users, items and the noise precision; r is centred (rating - global mean)."""
        if self.sides is None:
            self.sides = (Side(u, i, len(self.P), len(self.Q)), Side(i, u, len(self.Q), len(self.P)))
        k = self.P.shape[1] - 1
        mu, lam = sample_hyper(self.P, self.rng)
        feats = np.hstack([self.Q[:, :k], np.ones((len(self.Q), 1))])
        self.P = sample_rows(self.sides[0], feats, r - self.Q[i, k], self.alpha, mu, lam, self.rng)
        mu, lam = sample_hyper(self.Q, self.rng)
        feats = np.hstack([self.P[:, :k], np.ones((len(self.P), 1))])
        self.Q = sample_rows(self.sides[1], feats, r - self.P[u, k], self.alpha, mu, lam, self.rng)
        err = r - self.predict_current(u, i)
        self.alpha = self.rng.gamma(1.0 + len(r) / 2, 1.0 / (1.0 + 0.5 * float(err @ err)))
        self.iteration += 1

    def predict_current(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        k = self.P.shape[1] - 1
        return np.einsum("nk,nk->n", self.P[u, :k], self.Q[i, :k]) + self.P[u, k] + self.Q[i, k]

    def towers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(user vectors, item vectors, user bias, item bias) whose dot products average the kept draws."""
        if not self.kept_p:
            self.kept_p, self.kept_q = [self.P.copy()], [self.Q.copy()]
        s = len(self.kept_p)
        k = self.P.shape[1] - 1
        users = np.hstack([p[:, :k] for p in self.kept_p]) / np.sqrt(s)
        items = np.hstack([q[:, :k] for q in self.kept_q]) / np.sqrt(s)
        ub = np.mean([p[:, k] for p in self.kept_p], axis=0)
        ib = np.mean([q[:, k] for q in self.kept_q], axis=0)
        return (
            users.astype(np.float32),
            items.astype(np.float32),
            ub.astype(np.float32),
            ib.astype(np.float32),
        )

    # checkpoint: arrays in safetensors, the rest (iteration, alpha, RNG state) in JSON
    def save(self, ckpt: Path) -> None:
        ckpt.mkdir(parents=True, exist_ok=True)
        arrays = {"P": self.P, "Q": self.Q}
        for n, (p, q) in enumerate(zip(self.kept_p, self.kept_q, strict=True)):
            arrays[f"kept_p.{n}"], arrays[f"kept_q.{n}"] = p, q
        with atomic_path(ckpt / "bpmf.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        write_json(
            ckpt / "state.json",
            {
                "iteration": self.iteration,
                "alpha": self.alpha,
                "kept": len(self.kept_p),
                "rng": self.rng.bit_generator.state,
            },
        )

    def restore(self, ckpt: Path) -> bool:
        if not (ckpt / "state.json").exists() or not (ckpt / "bpmf.safetensors").exists():
            return False
        state = crypto.read_json(ckpt / "state.json")
        arrays = load(crypto.read_bytes(ckpt / "bpmf.safetensors"))
        if arrays["P"].shape != self.P.shape or arrays["Q"].shape != self.Q.shape:
            return False  # a checkpoint of other data: start over
        self.P, self.Q = arrays["P"], arrays["Q"]
        self.kept_p = [arrays[f"kept_p.{n}"] for n in range(state["kept"])]
        self.kept_q = [arrays[f"kept_q.{n}"] for n in range(state["kept"])]
        self.iteration, self.alpha = state["iteration"], state["alpha"]
        self.rng.bit_generator.state = state["rng"]
        return True

