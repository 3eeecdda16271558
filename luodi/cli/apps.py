"""CLI verbs for apps: train, evaluate, predict, tune, cv, runs, config render|schema (all via luodi.api)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from luodi.cli.common import SetOption
from luodi.cli.common import fail as _fail
from luodi.config import parse_overrides
from luodi.errors import LuodiError

console = Console(stderr=True)
out = Console()


def _is_file(text: str) -> bool:
    """Whether text names an existing path (inline JSON can be longer than a file name may be)."""
    try:
        return Path(text).exists()
    except OSError:
        return False


def _metrics_table(title: str, metrics: dict[str, float]) -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return t


def register(app: typer.Typer) -> None:
    from luodi import api

    @app.command("train")
    def train_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file")],
        resume: Annotated[bool, typer.Option("--resume", help="continue the newest unfinished run")] = False,
        set_: SetOption = None,
        backend: Annotated[
            str, typer.Option(help="local | ray (torch tasks data-parallel on Ray Train: docs/ray.md)")
        ] = "local",
        workers: Annotated[
            int | None, typer.Option(help="--backend ray: training workers, one CPU each (default 2)")
        ] = None,
        address: Annotated[
            str | None, typer.Option(help="--backend ray: a Ray cluster (auto, ray://head:10001); default: local Ray")
        ] = None,
    ):
        """Train an app: progress, a checkpoint each epoch, runs/<app>/<version>/ with report.html."""
        try:
            run = api.train(
                app_file,
                resume=resume,
                progress=True,
                log=lambda m: console.print(m),
                overrides=parse_overrides(set_),
                backend=backend,
                workers=workers,
                address=address,
            )
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: continue with `luodi train APP.yaml --resume`")
            raise typer.Exit(130) from None
        except LuodiError as e:
            _fail(e)
        out.print(_metrics_table(f"{run.app} {run.version} (validation)", run.metrics))
        out.print(f"run: {run.path}\nreport: {run.path / 'report.html'}")

    @app.command("evaluate")
    def evaluate_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file or trained app name")],
        data: Annotated[str | None, typer.Option("--data", help="labelled file (dataset format)")] = None,
        version: Annotated[str | None, typer.Option(help="run version (default: the served one)")] = None,
    ):
        """Evaluate the served run (or --version) on the validation split or a labelled file."""
        try:
            res = api.evaluate(app_file, data=data, version=version)
        except LuodiError as e:
            _fail(e)
        out.print(_metrics_table(f"{res['app']} {res['version']} on {res['data']}", res["metrics"]))
        if res.get("note"):
            out.print(f"note: {res['note']}")
        if res.get("held"):
            out.print(f"held: {res['held']}")
        out.print(f"report: {res.get('report')}")

    @app.command("predict")
    def predict_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file or trained app name")],
        input: Annotated[
            str, typer.Option("--input", "-i", help="csv | json | jsonl | image | wav, or inline JSON")
        ] = ...,
        version: Annotated[str | None, typer.Option(help="run version (default: the served one)")] = None,
        explain: Annotated[
            bool, typer.Option("--explain", help="table, text, image, speech apps: each input's effect")
        ] = False,
    ):
        """Predict with the served run (the latest, unless pinned with `luodi promote`); one JSON line per input."""
        try:
            inputs = input
            if input.lstrip().startswith(("{", "[")) and not _is_file(input):
                try:
                    inputs = json.loads(input)
                except json.JSONDecodeError as e:
                    raise typer.BadParameter(f"--input is not valid JSON: {e}") from e
            for row in api.predict(app_file, inputs, version=version, explain=explain):
                print(json.dumps(row, ensure_ascii=False))
        except LuodiError as e:
            _fail(e)

    @app.command("tune")
    def tune_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file")],
        sampler: Annotated[
            str | None, typer.Option(help="grid | random | tpe (default: tune.sampler)")
        ] = None,
        trials: Annotated[int | None, typer.Option(help="number of trials (default: tune.trials)")] = None,
        folds: Annotated[int | None, typer.Option(help="k-fold per trial (default: tune.folds)")] = None,
        executor: Annotated[str, typer.Option(help="local (Optuna) | ray (Ray Tune)")] = "local",
        train_best: Annotated[
            bool, typer.Option("--train-best", help="train a run with the best params")
        ] = False,
        cpus: Annotated[
            int | None, typer.Option(help="--executor ray: CPUs of the local Ray (default: all; 1 trial per CPU)")
        ] = None,
        set_: SetOption = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="continue the interrupted search of this config and executor")
        ] = False,
    ):
        """Search hyper-parameters (tune.space, dotted paths) with Optuna grid / random / TPE, or Ray Tune."""
        try:
            res = api.tune(
                app_file,
                sampler=sampler,
                trials=trials,
                folds=folds,
                executor=executor,
                train_best=train_best,
                cpus=cpus,
                overrides=parse_overrides(set_),
                resume=resume,
            )
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted[/yellow]: finished trials are stored; continue with `luodi tune APP.yaml "
                "--resume` (same options)"
            )
            raise typer.Exit(130) from None
        except LuodiError as e:
            _fail(e)
        t = Table(title=f"{res['app']}: {res['sampler']} search, {res['metric']} ({res['direction']})")
        t.add_column("#")
        t.add_column("params")
        t.add_column(res["metric"] or "value", justify="right")
        for tr in res["trials"]:
            t.add_row(str(tr["number"]), json.dumps(tr["params"]), f"{tr['value']:.4f}")
        out.print(t)
        if "resumed_after" in res:
            out.print(f"resumed: {res['resumed_after']} trials had finished before")
        out.print(f"best: {json.dumps(res['best_params'])} -> {res['best_value']:.4f}")
        if "run" in res:
            out.print(f"trained {res['run']['version']}: {res['run']['path']}")

    @app.command("cv")
    def cv_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file")],
        folds: Annotated[int, typer.Option(help="number of folds")] = 5,
        train_only: Annotated[
            bool,
            typer.Option("--train-only", help="fold only the training part of data.split (validation stays unseen)"),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON with every metric")] = False,
        set_: SetOption = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="skip the folds an interrupted cv with the same options finished")
        ] = False,
    ):
        """k-fold cross-validation on the whole dataset: metrics per fold, then mean ± std."""
        try:
            res = api.cv(
                app_file,
                folds=folds,
                train_only=train_only,
                progress=not as_json,
                overrides=parse_overrides(set_),
                resume=resume,
            )
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted[/yellow]: finished folds are stored; continue with `luodi cv APP.yaml "
                "--resume` (same options)"
            )
            raise typer.Exit(130) from None
        except LuodiError as e:
            _fail(e)
        if as_json:
            print(api.dumps(res))
            return
        wanted = api.load_app(app_file).evaluate.metrics
        shown = [k for k in res["mean"] if k in wanted] or list(res["mean"])[:6]
        t = Table(title=f"{res['app']}: {folds}-fold cv, {res['scope']}, {res['rows']} rows")
        t.add_column("fold")
        t.add_column("rows", justify="right")
        for k in shown:
            t.add_column(k, justify="right")
        for i, (m, n) in enumerate(zip(res["per_fold"], res["fold_sizes"], strict=True), 1):
            t.add_row(str(i), str(n), *(f"{m[k]:.4f}" for k in shown))
        t.add_section()
        t.add_row("mean ± std", str(res["rows"]), *(f"{res['mean'][k]:.4f} ± {res['std'][k]:.4f}" for k in shown))
        out.print(t)

    @app.command("runs")
    def runs_cmd(
        app_name: Annotated[str | None, typer.Argument(help="app name or YAML (default: all)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ):
        """Trained versions with status and metrics."""
        try:
            runs = api.list_runs(app_name)
        except LuodiError as e:
            _fail(e)
        if as_json:
            print(api.dumps(runs))
            return
        if not runs:
            which = f"of '{app_name}' " if app_name else ""
            console.print(f"no runs {which}yet: train one with `luodi train APP.yaml`")
            return
        rows = []
        for r in runs:
            metrics = {k: v for k, v in r["metrics"].items() if k not in ("n", "train_seconds")}
            secs = r["metrics"].get("train_seconds")
            took = "" if secs is None else f"{secs / 60:.1f} min" if secs >= 60 else f"{secs:.0f} s"
            created = (r["created_at"] or "")[:16].replace("T", " ")
            m = " ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:4])
            status = r["status"] + (" · served (pinned)" if r.get("pinned") else " · served" if r.get("served") else "")
            if r.get("held") and not r.get("served"):  # why it is not served by being newest
                status += f" · held: {r['held']}"
            rows.append((r["app"], r["version"], r["task"], status, m, took, created))
        if out.width < 140:  # narrow terminal or a pipe: one block per run, nothing truncated
            for app_, ver, task, status, m, took, created in rows:
                out.print(f"[bold]{app_}[/bold] {ver}  {task}  {status}  {took}  {created}", highlight=False)
                out.print(f"    {m}" if m else "    (no metrics)", highlight=False)
            return
        t = Table(title="runs")
        for c in ("app", "version", "task", "status", "metrics (validation)", "train", "created (UTC)"):
            t.add_column(c, no_wrap=c != "metrics (validation)", justify="right" if c == "train" else "left")
        for row in rows:
            t.add_row(*row)
        out.print(t)

    @app.command("promote")
    def promote_cmd(
        app_name: Annotated[str, typer.Argument(help="app name or YAML")],
        version: Annotated[str | None, typer.Argument(help="the version to serve, e.g. v3")] = None,
        latest: Annotated[
            bool, typer.Option("--latest", help="unpin: serve the newest finished run again (after every train)")
        ] = False,
        force: Annotated[
            bool, typer.Option("--force", help="serve a run that missed its evaluate.goal (see `luodi runs APP`)")
        ] = False,
    ):
        """Choose the version an app serves (roll back or forward); servers sharing the store switch at once."""
        if (version is None) == (not latest):
            _fail(LuodiError("give a VERSION to serve (see `luodi runs APP`) or --latest, not both", param="version"))
        try:
            run = api.promote(app_name, None if latest else version, force)
        except LuodiError as e:
            _fail(e)
        how = "pinned" if run["pinned"] else "latest finished run, follows new training"
        out.print(f"{run['app']} serves {run['version']} ({how})", highlight=False)

    config = typer.Typer(help="App file tools: render the resolved config, print the JSON Schema.")
    app.add_typer(config, name="config")

    @config.command("render")
    def render_cmd(app_file: Annotated[str, typer.Argument(help="App YAML file")], set_: SetOption = None):
        """Print the fully resolved app config (defaults filled in), or the errors with their key paths."""
        try:
            print(api.render_config(app_file, parse_overrides(set_)), end="")
        except LuodiError as e:
            _fail(e)

    @config.command("schema")
    def schema_cmd():
        """Print the App file's JSON Schema."""
        print(json.dumps(api.config_schema(), indent=2))
