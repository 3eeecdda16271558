"""One simulated federation of a table app's MLP: the clients' shards, Flower's server loop and FedAvg strategy
driven in-process, each client's local epochs on luodi.train.torch_loop (DP-SGD with --dp), and the per-round
validation score. Used by luodi.apps.federated (which checks the app and writes the run); imports Flower and torch.
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
from flwr.common import DisconnectRes, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Server, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

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

    def __init__(self, cfg: Any, task: Any, tr: Any, va: Any, opts: Any):
        self.cfg, self.task, self.opts = cfg, task, opts
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
        model = self.load(self._new_model(), parameters)
        rows = torch.from_numpy(self.shards[cid])
        loader = tensor_batches(self.x[rows], self.y[rows], self.w[rows], batch_size=tc.batch_size)
        loop = LoopConfig.from_train(
            tc, epochs=self.opts.local_epochs, lr=(o.mlp_lr or tc.lr) * self.lr_factor(rnd),
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
        loss = float(res.history[-1]["train_loss"]) if res.history else float("nan")
        return self.arrays(model), len(rows), {"train_loss": loss}

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
        strategy = FedAvg(
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
