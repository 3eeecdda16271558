"""One simulated federation of a table app's MLP: the clients' shards, Flower's server loop and FedAvg strategy
driven in-process, each client's local epochs on luodi.train.torch_loop (DP-SGD with --dp), and the per-round
validation score. Used by luodi.apps.federated (which checks the app and writes the run); imports Flower and torch.

SCAFFOLD (Karimireddy et al. 2020; the default strategy for SGD clients without --dp) against client drift: on
label-skewed shards each client's local epochs pull the weights towards its own class mix, and the average of the
drifted models settles away from the centralized optimum. The server sends a control variate c with the weights;
each client keeps its own c_i and adds c - c_i to every gradient (the federation's average gradient minus its own),
which cancels the drift; after training it sets c_i to its average gradient (option II: its displacement over its
SGD steps, sgd_reach) and returns the change of c_i. Flower has no SCAFFOLD strategy: ScaffoldAvg is its FedAvg plus
these extra arrays, on Flower's interfaces. On adult (alpha 0.5, 10 clients, four split seeds) it lifts the most
skewed split from 98.8 % to 99.2 % of the centralized accuracy, so every seed meets the 99 % goal (FedAvg: three of
four; FedAvg is as good or better on the less skewed ones); docs/federated.md, Measured.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import DisconnectRes, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Server, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.strategy.aggregate import aggregate

from luodi.data.balance import sample_weights
from luodi.data.federated_split import dirichlet_shards, iid_shards, label_skew
from luodi.errors import ConfigError
from luodi.evaluate.calibration import apply_calibrator, fit_calibrator
from luodi.tasks.tabular.torch_state import make_mlp, tensor_batches
from luodi.train.privacy import PRIVACY_FILE
from luodi.train.torch_loop import LoopConfig, train_loop


def weighted_loss(out: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The tabular MLP's classification loss (as TabularTask's _fit_mlp): row-weighted cross-entropy."""
    return (w * torch.nn.functional.cross_entropy(out, target, reduction="none")).sum() / w.sum()


def mean_train_loss(results: list[tuple[int, dict[str, Any]]]) -> dict[str, float]:
    """The clients' last local train loss, weighted by their rows (Flower's fit metrics aggregation)."""
    rows = sum(n for n, _ in results)
    return {"train_loss": sum(n * float(m["train_loss"]) for n, m in results) / max(1, rows)}


SGD_MOMENTUM = 0.9  # luodi.train.torch_loop's SGD (one optimizer, so one momentum buffer, over the local epochs)


def sgd_reach(steps: int, lr: float, momentum: float = SGD_MOMENTUM) -> float:
    """How far `steps` SGD steps with heavy-ball momentum, starting from an empty buffer, move the weights per unit
    of a constant gradient: lr * sum over t of (1 - momentum^t) / (1 - momentum). The buffer needs about
    1 / (1 - momentum) steps to build up, so with few steps (small shards) lr / (1 - momentum) per step would
    overstate the distance several times and understate the client's average gradient by as much."""
    b = momentum
    return lr / (1 - b) * (steps - b * (1 - b**steps) / (1 - b)) if b else lr * steps


class ScaffoldAvg(FedAvg):
    """Flower's FedAvg plus SCAFFOLD's server control variate: sent after the weights in each fit instruction; the
    clients answer their new weights followed by the change of their own control variate, and the server moves c
    by the sum of those changes over all clients (c = the mean of the clients' c_i). The weights are FedAvg's
    row-weighted average; evaluation and the final parameters are the weights alone."""

    def __init__(self, *, clients: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.clients = clients
        self.control: list[np.ndarray] | None = None

    def __repr__(self) -> str:
        return "ScaffoldAvg (flwr FedAvg + SCAFFOLD control variates)"

    def configure_fit(self, server_round, parameters, client_manager):
        weights = parameters_to_ndarrays(parameters)
        if self.control is None:
            self.control = [np.zeros_like(w) for w in weights]
        pairs = super().configure_fit(server_round, parameters, client_manager)
        sent = ndarrays_to_parameters(weights + self.control)
        return [(client, FitIns(sent, ins.config)) for client, ins in pairs]

    def aggregate_fit(self, server_round, results, failures):
        if not results or (failures and not self.accept_failures):
            return None, {}
        n = len(self.control or [])
        arrays = [(parameters_to_ndarrays(r.parameters), r.num_examples) for _, r in results]
        averaged = aggregate([(a[:n], rows) for a, rows in arrays])
        for a, _ in arrays:
            self.control = [c + d / self.clients for c, d in zip(self.control, a[n:], strict=True)]
        metrics = self.fit_metrics_aggregation_fn([(r.num_examples, r.metrics) for _, r in results]) \
            if self.fit_metrics_aggregation_fn else {}
        return ndarrays_to_parameters(averaged), metrics


class ShardClient(NumPyClient):
    """One simulated client: trains the global weights on its own shard and sends back the new weights."""

    def __init__(self, fed: Federation, cid: int):
        self.fed, self.cid = fed, cid

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return self.fed.arrays(self.fed.model)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        return self.fed.train_client(self.cid, parameters, int(config["round"]))


class InProcessProxy(ClientProxy):
    """Flower's handle on a client, calling it in this process (the place of a gRPC or Ray connection)."""

    def __init__(self, fed: Federation, cid: int):
        super().__init__(str(cid))
        self.fed, self.index = fed, cid

    def _client(self):
        return ShardClient(self.fed, self.index).to_client()

    def get_properties(self, ins, timeout, group_id):
        return self._client().get_properties(ins)

    def get_parameters(self, ins, timeout, group_id):
        return self._client().get_parameters(ins)

    def fit(self, ins, timeout, group_id):
        try:
            return self._client().fit(ins)
        except BaseException as e:  # Flower would count it as a failed client and average the rest: stop instead
            self.fed.errors.append(e)
            raise

    def evaluate(self, ins, timeout, group_id):
        return self._client().evaluate(ins)

    def reconnect(self, ins, timeout, group_id):
        return DisconnectRes(reason="")


class Federation:
    """The encoded training rows split into client shards, the global model and the per-round record."""

    def __init__(self, cfg: Any, task: Any, tr: Any, va: Any, opts: Any, scaffold: bool = False):
        self.cfg, self.task, self.opts, self.scaffold = cfg, task, opts, scaffold
        self.strategy_name = ("SCAFFOLD (flwr.server.strategy.FedAvg + control variates)" if scaffold
                              else "FedAvg (flwr.server.strategy.FedAvg)")
        self.controls: dict[int, list[torch.Tensor]] = {}  # SCAFFOLD: each client's own control variate c_i
        train, valid = task.encode_ordinal(tr), task.encode_ordinal(va)
        task._setup(train)  # preprocessing and classes: agreed before training (module docstring of federated.py)
        if task.objective == "regression":
            raise ConfigError("federated learning trains classifiers; this app's label is numeric (regression): "
                              "set model.options.objective or data.columns.label_map", param="model.options.objective")
        if cfg.train.fairness and task.objective != "binary":
            raise ConfigError(f"'train.fairness' needs a binary label; this one is {task.objective}")
        tc = cfg.train
        y_tr = task._target(train)
        self.x = torch.from_numpy(task._dense(train, "mlp"))
        self.y = torch.from_numpy(np.array(y_tr))
        sw = sample_weights(y_tr, tc.class_weights)
        self.w = torch.from_numpy(sw) if sw is not None else torch.ones(len(y_tr))
        self.x_valid = torch.from_numpy(task._dense(valid, "mlp"))
        self.y_valid = torch.from_numpy(np.array(task._target(valid)))
        self.binary_valid = (self.y_valid.numpy() == task.positive).astype(int)
        self.seed = opts.seed if opts.seed is not None else tc.seed
        if opts.alpha is None:
            self.shards = iid_shards(len(y_tr), opts.clients, self.seed)
        else:
            self.shards = dirichlet_shards(y_tr, opts.clients, opts.alpha, self.seed)
        self.sizes = sorted(len(s) for s in self.shards)
        self.skew = label_skew(y_tr, self.shards)
        self.n_out = len(task.classes)
        torch.manual_seed(tc.seed)
        self.model = self._new_model()  # the initial global weights, later the final ones
        self.history: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.spent: dict[int, list[tuple[float, float, int]]] = {}  # DP: each client's accountant steps
        self._round_budget: dict[int, dict[str, float]] = {}

    def _new_model(self) -> torch.nn.Module:
        o = self.task.opts
        return make_mlp(self.x.shape[1], self.n_out, list(o.hidden), o.dropout)

    @staticmethod
    def arrays(model: torch.nn.Module) -> list[np.ndarray]:
        return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]

    @staticmethod
    def load(model: torch.nn.Module, arrays: list[np.ndarray]) -> torch.nn.Module:
        keys = list(model.state_dict().keys())
        model.load_state_dict(OrderedDict((k, torch.as_tensor(np.asarray(a))) for k, a in zip(keys, arrays,
                                                                                              strict=True)))
        return model

    # ---- one client's round ------------------------------------------------------------------------------
    def train_client(self, cid: int, parameters: list[np.ndarray], rnd: int) -> tuple[list[np.ndarray], int, dict]:
        """Local epochs on the client's shard from the global weights, on the shared torch loop (a fresh
        optimizer each round, as FedAvg clients do)."""
        tc, o = self.cfg.train, self.task.opts
        n = len(self._new_model().state_dict())
        model = self.load(self._new_model(), parameters[:n])
        start = [p.detach().clone() for p in model.parameters()]
        rows = torch.from_numpy(self.shards[cid])
        lr = (o.mlp_lr or tc.lr) * self.lr_factor(rnd)
        hooks = []
        if self.scaffold:  # every gradient + (c - c_i): the federation's average gradient minus this client's own
            own = self.controls.get(cid) or [torch.zeros_like(p) for p in start]
            server = [torch.as_tensor(np.asarray(a)) for a in parameters[n:]]
            for p, c, ci in zip(model.parameters(), server, own, strict=True):
                hooks.append(p.register_hook(lambda g, d=c - ci: g + d))
        loader = tensor_batches(self.x[rows], self.y[rows], self.w[rows], batch_size=tc.batch_size)
        loop = LoopConfig.from_train(
            tc, epochs=self.opts.local_epochs, lr=lr,
            weight_decay=o.weight_decay, schedule="constant", patience=None, monitor="loss", threads=o.threads,
            max_minutes=None,
            seed=self.seed * 1_000_003 + rnd * 10_007 + cid, privacy=self._privacy(cid),
        )
        folder = Path(tempfile.mkdtemp(prefix=f"luodi-fl-{cid}-"))
        try:
            res = train_loop(model, loader, lambda m, b: weighted_loss(m(b[0]), b[1], b[2]), None, folder, loop,
                             progress=False)
            if loop.privacy:
                info = json.loads((folder / PRIVACY_FILE).read_text())
                self.spent.setdefault(cid, []).append((info["noise_multiplier"], info["sample_rate"], info["steps"]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            for h in hooks:
                h.remove()
        loss = float(res.history[-1]["train_loss"]) if res.history else float("nan")
        if not self.scaffold:
            return self.arrays(model), len(rows), {"train_loss": loss}
        # option II of SCAFFOLD: c_i+ = c_i - c + (x - y_i) / (the distance K steps move per unit of gradient)
        steps = self.opts.local_epochs * math.ceil(len(rows) / tc.batch_size)
        scale = 1.0 / sgd_reach(steps, lr)
        new = [ci - c + (x - p.detach()) * scale
               for ci, c, x, p in zip(own, server, start, model.parameters(), strict=True)]
        self.controls[cid] = new
        delta = [(a - b).numpy() for a, b in zip(new, own, strict=True)]
        return self.arrays(model) + delta, len(rows), {"train_loss": loss}

    def lr_factor(self, rnd: int) -> float:
        """The clients' learning rate over the rounds: cosine from the app's rate down to 5 % of it in the last
        round (constant with --lr-schedule constant). Late rounds take small local steps, so skewed clients
        drift apart less and their average settles (client drift grows with the local learning rate)."""
        if self.opts.lr_schedule == "constant" or self.opts.rounds == 1:
            return 1.0
        progress = (rnd - 1) / (self.opts.rounds - 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    # ---- DP-SGD per client -------------------------------------------------------------------------------
    def _delta(self, cid: int) -> float:
        return self.cfg.train.privacy.delta or 1.0 / (10 * len(self.shards[cid]))

    def _privacy(self, cid: int) -> dict[str, float] | None:
        """One round's share of the client's budget: the noise that spends train.privacy.epsilon over all rounds'
        local epochs (RDP), and the epsilon that noise spends in one round (what the loop calibrates to)."""
        p = self.cfg.train.privacy
        if not self.opts.dp or p is None:
            return None
        if cid not in self._round_budget:
            from opacus.accountants import RDPAccountant
            from opacus.accountants.utils import get_noise_multiplier

            steps = math.ceil(len(self.shards[cid]) / self.cfg.train.batch_size)
            rate, delta = 1.0 / steps, self._delta(cid)
            epochs = self.opts.local_epochs
            with warnings.catch_warnings():  # as luodi.train.privacy: small noise levels hit the largest RDP order
                warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
                sigma = get_noise_multiplier(target_epsilon=p.epsilon, target_delta=delta, sample_rate=rate,
                                             epochs=epochs * self.opts.rounds, accountant="rdp")
                acc = RDPAccountant()
                acc.history = [(sigma, rate, epochs * steps)]
                self._round_budget[cid] = {"epsilon": float(acc.get_epsilon(delta)), "delta": delta,
                                           "max_grad_norm": p.max_grad_norm}
        return self._round_budget[cid]

    def privacy_summary(self) -> dict[str, Any]:
        """Each client's epsilon, composed (RDP) over every round it trained, from the noise actually used."""
        from opacus.accountants import RDPAccountant

        per_client = []
        for cid in range(len(self.shards)):
            acc = RDPAccountant()
            acc.history = list(self.spent.get(cid, []))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
                per_client.append(round(float(acc.get_epsilon(self._delta(cid))), 4) if acc.history else 0.0)
        p = self.cfg.train.privacy
        return {"mechanism": "DP-SGD on each client (Opacus, RDP accountant, Poisson sampling), composed over rounds",
                "epsilon_target": p.epsilon, "delta": p.delta or "1 / (10 x the client's rows)",
                "max_grad_norm": p.max_grad_norm, "epsilon_per_client": per_client,
                "epsilon_max": max(per_client), "epsilon_mean": round(float(np.mean(per_client)), 4)}

    # ---- the server ----------------------------------------------------------------------------------------
    def evaluate(self, rnd: int, arrays: list[np.ndarray], config: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """The global model on the app's validation split after round `rnd` (0: the initial weights)."""
        if self.errors:
            raise self.errors[0]
        model = self.load(self._new_model(), arrays).eval()
        with torch.no_grad():
            out = model(self.x_valid)
            loss = float(torch.nn.functional.cross_entropy(out, self.y_valid))
            p = torch.softmax(out, 1).numpy()
        raw = float((p.argmax(1) == self.y_valid.numpy()).mean())
        acc = self._served_accuracy(p) if self.task.objective == "binary" else raw
        self.history.append({"round": rnd, "accuracy": round(acc, 6), "raw_accuracy": round(raw, 6),
                             "valid_loss": round(loss, 6), "seconds": round(time.perf_counter() - self._t0, 2)})
        self._say(f"round {rnd}/{self.opts.rounds}: accuracy {acc:.4f}  valid_loss {loss:.4f}")
        return loss, {"accuracy": acc}

    def _served_accuracy(self, p: np.ndarray) -> float:
        """Accuracy of the probabilities as the run would serve them: calibrated on the validation rows
        (model.options.calibration), as TabularTask.fit and the final run do."""
        pos = p[:, self.task.positive]
        cal = fit_calibrator(pos, self.binary_valid, self.task.opts.calibration)
        chosen = apply_calibrator(pos, cal) >= 0.5
        return float((chosen.astype(int) == self.binary_valid).mean())

    def run(self, say: Callable[[str], None]) -> list[dict[str, Any]]:
        """`rounds` rounds of Flower's server loop with FedAvg; returns the per-round record (round 0 first)."""
        import logging

        logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower logs every step at INFO; luodi says its own
        self._say, self._t0 = say, time.perf_counter()
        n = self.opts.clients
        per_round = max(1, int(n * self.opts.fraction))
        kind = (lambda **kw: ScaffoldAvg(clients=n, **kw)) if self.scaffold else FedAvg
        strategy = kind(
            fraction_fit=self.opts.fraction, fraction_evaluate=0.0, min_fit_clients=per_round,
            min_evaluate_clients=0, min_available_clients=n, evaluate_fn=self.evaluate,
            on_fit_config_fn=lambda rnd: {"round": rnd}, accept_failures=False,
            fit_metrics_aggregation_fn=mean_train_loss,
            initial_parameters=ndarrays_to_parameters(self.arrays(self.model)),
        )
        manager = SimpleClientManager()
        for cid in range(n):
            manager.register(InProcessProxy(self, cid))
        server = Server(client_manager=manager, strategy=strategy)
        server.set_max_workers(1)  # one client at a time: memory stays one model and one shard deep
        random.seed(self.seed)  # Flower samples clients with the random module
        server.fit(num_rounds=self.opts.rounds, timeout=None)
        if self.errors:
            raise self.errors[0]
        self.load(self.model, parameters_to_ndarrays(server.parameters))  # the last round's average
        return self.history

    def finish(self, task: Any) -> None:
        """The averaged weights become the task's MLP (what save / predict use)."""
        task.mlp = self.model.eval()
        task.members, task.sk, task.booster, task.linear = [], {}, None, None
        task._coder, task._mlp_layers, task._onnx_batch = None, None, None
