"""`luodi federated APP.yaml`: FedAvg (Flower) of a table app's MLP over simulated clients (luodi.apps.federated)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from luodi.cli.common import SetOption, fail
from luodi.config import parse_overrides
from luodi.errors import LuodiError

console = Console(stderr=True)
out = Console()


def register(app: typer.Typer) -> None:
    @app.command("federated")
    def federated_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file (a table app with model.type: mlp)")],
        clients: Annotated[int, typer.Option("--clients", help="simulated clients, one shard of rows each")] = 10,
        rounds: Annotated[int, typer.Option("--rounds", help="FedAvg rounds")] = 20,
        non_iid: Annotated[
            float | None,
            typer.Option("--non-iid", metavar="ALPHA", help="label-skewed Dirichlet(ALPHA) split (e.g. 0.5); "
                         "default: iid"),
        ] = None,
        local_epochs: Annotated[int, typer.Option("--local-epochs", help="epochs per client per round")] = 1,
        fraction: Annotated[float, typer.Option("--fraction", help="share of clients training each round")] = 1.0,
        lr_schedule: Annotated[
            str, typer.Option("--lr-schedule", help="clients' learning rate over the rounds: cosine or constant")
        ] = "cosine",
        strategy: Annotated[str, typer.Option(
            "--strategy", help="auto (SCAFFOLD for SGD clients without --dp, else FedAvg), scaffold or fedavg"),
        ] = "auto",
        dp: Annotated[bool, typer.Option("--dp", help="clients train with DP-SGD under train.privacy")] = False,
        centralized: Annotated[
            bool, typer.Option("--centralized/--no-centralized", help="also train centrally to compare")
        ] = True,
        seed: Annotated[int | None, typer.Option("--seed", help="seed of the split (default: train.seed)")] = None,
        set_: SetOption = None,
    ):
        """Federated training (Flower: SCAFFOLD or FedAvg) over simulated clients; the result is a normal run."""
        from luodi import api
        from luodi.apps.federated import read_summary

        try:
            run = api.federated(
                app_file, clients=clients, rounds=rounds, alpha=non_iid, local_epochs=local_epochs,
                fraction=fraction, lr_schedule=lr_schedule, strategy=strategy, dp=dp, centralized=centralized,
                seed=seed,
                overrides=parse_overrides(set_),
                log=lambda m: console.print(m, highlight=False),
            )
        except LuodiError as e:
            fail(e)
        s = read_summary(run.path)
        line = f"federated accuracy {run.metrics.get('accuracy', float('nan')):.4f}"
        if s.get("centralized"):
            line += (f" vs centralized {s['centralized']['accuracy']:.4f} ({s['accuracy_ratio']:.1%}; 99 % "
                     f"reached in round {s['rounds_to_99pct']})")
        if s.get("privacy"):
            line += f"; DP epsilon per client <= {s['privacy']['epsilon_max']}"
        out.print(line, highlight=False)
        out.print(f"run: {run.path}\nreport: {run.path / 'report.html'}\nfederated: {run.path / 'federated.json'}")
