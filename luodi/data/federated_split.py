"""How simulated federated clients share a table's training rows: iid shards, or label-skewed shards drawn from a
Dirichlet(alpha) distribution per class (Hsu et al. 2019, "Measuring the effects of non-identical data
distribution"), the split federated-learning papers benchmark with. Small alpha: each client sees mostly one or
two classes; large alpha: close to iid. Every row goes to exactly one client; the split is seeded.
"""

from __future__ import annotations

import numpy as np

from luodi.errors import BadRequest

MAX_DRAWS = 1000  # redraws until every client holds at least `min_rows` rows


def iid_shards(n_rows: int, clients: int, seed: int) -> list[np.ndarray]:
    """`clients` shuffled shards of near-equal size (sizes differ by at most one row)."""
    _check(n_rows, clients, 1)
    order = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(s) for s in np.array_split(order, clients)]


def dirichlet_shards(labels: np.ndarray, clients: int, alpha: float, seed: int, min_rows: int = 1) -> list[np.ndarray]:
    """Row indices per client: for each class, its rows are dealt to the clients in proportions drawn from
    Dirichlet(alpha, ..., alpha). Drawn again (same seeded generator) until each client has `min_rows` rows.

    Raises BadRequest naming --clients / --non-iid when no such split is found (too many clients for the rows).
    """
    labels = np.asarray(labels)
    if not alpha > 0:
        raise BadRequest(f"--non-iid must be a Dirichlet concentration > 0 (got {alpha}); e.g. 0.5", param="--non-iid")
    _check(len(labels), clients, min_rows)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(MAX_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for rows in by_class:
            rows = rng.permutation(rows)
            share = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(rows)).astype(int)
            for j, piece in enumerate(np.split(rows, cuts)):
                parts[j].append(piece)
        shards = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(s) for s in shards) >= min_rows:
            return shards
    raise BadRequest(
        f"no Dirichlet({alpha}) split of {len(labels)} rows gives each of {clients} clients {min_rows} rows; "
        "use fewer --clients or a larger --non-iid alpha", param="--clients")


def label_skew(labels: np.ndarray, shards: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's class mix and the whole table's (0: iid, 1: disjoint),
    weighted by shard size: how non-iid a split is."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    overall = np.array([(labels == c).mean() for c in classes])
    dist = [0.5 * np.abs(np.array([(labels[s] == c).mean() for c in classes]) - overall).sum() for s in shards]
    return float(np.average(dist, weights=[len(s) for s in shards]))


def _check(n_rows: int, clients: int, min_rows: int) -> None:
    if clients < 1:
        raise BadRequest(f"--clients must be at least 1 (got {clients})", param="--clients")
    if clients * min_rows > n_rows:
        raise BadRequest(
            f"--clients {clients} is more than the {n_rows} training rows allow ({min_rows} each); use fewer clients",
            param="--clients")
