"""``k2e submit``: upload a model and its data, submit the spec, optionally watch it."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from k2e.cli.context import EXIT_REJECTED, CliState, state
from k2e.cli.plans import print_plan
from k2e.cli.render import print_json, print_problem
from k2e.cli.watching import watch_job
from k2e.client import Client, ProblemError

# Without a max_steps in --spec or --set, a job trains this many steps.
DEFAULT_MAX_STEPS = 1000


class SpecError(ValueError):
    """A --spec file or --set option the command cannot read."""


def apply_setting(spec: dict[str, Any], setting: str) -> None:
    """``train.max_steps=2000`` sets spec["train"]["max_steps"] = 2000. The value is read as
    JSON when it parses (numbers, true, null, lists, objects), else taken as a string."""
    path, sep, raw = setting.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
        raise SpecError(f"--set {setting!r}: expected FIELD=VALUE, e.g. train.max_steps=2000")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    node = spec
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {setting!r}: {key} is not an object in the spec")
        node = child
    node[keys[-1]] = value


def build_spec(spec_file: Path | None, settings: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if spec_file is not None:
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise SpecError(f"--spec {spec_file}: {exc}") from exc
        if not isinstance(spec, dict):
            raise SpecError(f"--spec {spec_file}: a JSON object is expected")
    for setting in settings:
        apply_setting(spec, setting)
    return spec


def cluster_shape(
    spec: dict[str, Any], workers: int | None, parameter_servers: int | None, evaluator: bool
) -> dict[str, Any] | None:
    """The spec's ``distribution`` with the cluster options over it; None when neither
    asks for a cluster."""
    if workers is None and parameter_servers is None and not evaluator:
        return None
    given = spec.get("distribution")
    shape: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    if workers is not None:
        shape["workers"] = workers
    if parameter_servers is not None:
        shape["parameter_servers"] = parameter_servers
    if evaluator:
        shape["evaluator"] = True
    return shape


def _upload(st: CliState, client: Client, kind: str, path: Path) -> str:
    try:
        if kind == "model":
            info: Any = client.upload_model(path)
            detail = f"inputs {', '.join(t.name for t in info.inputs)}"
        else:
            info = client.upload_dataset(path)
            detail = f"{info.num_examples} examples"
    except ProblemError as exc:
        print_problem(st.err, exc, f"upload of {path} refused")
        raise typer.Exit(EXIT_REJECTED) from exc
    st.err.print(Text(f"uploaded {kind} {path.name}: {info.id} ({detail})", style="dim"))
    return str(info.id)


def submit(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="A Keras model: .h5/.hdf5 or .keras.")],
    train: Annotated[Path, typer.Option(help="Training data: .npz, .csv, .tfrecord[.gz].")],
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help="Evaluation data (the same formats).")
    ] = None,
    spec_file: Annotated[
        Path | None,
        typer.Option("--spec", help="A ConvertRequest as JSON; the uploads fill in its ids."),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="FIELD=VALUE over the spec, e.g. train.max_steps=2000."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Show live progress until the job ends.")] = False,
    cancel_on_interrupt: Annotated[
        bool, typer.Option(help="With --wait, Ctrl-C cancels the job instead of detaching.")
    ] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submitting again with this key gives the same job.")
    ] = None,
    priority: Annotated[
        str | None,
        typer.Option(
            help="The job's priority class (low, normal, high, or one the server adds); at "
            "most the tenant's max_priority."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Train on a cluster of this many workers (the chief among them), placed "
            "at once on as many worker slots.",
        ),
    ] = None,
    parameter_servers: Annotated[
        int | None,
        typer.Option(min=0, help="The cluster's parameter servers (at least 1)."),
    ] = None,
    evaluator: Annotated[
        bool,
        typer.Option(
            "--evaluator", help="Add a cluster member that evaluates the chief's checkpoints."
        ),
    ] = False,
    deterministic: Annotated[
        bool,
        typer.Option(help="Op determinism and fixed seeds: `k2e rerun` gives the same bits."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Check everything a submission checks and print the job's plan (metric "
            "keys, signatures, parameters, memory, queue); nothing is uploaded or kept."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Upload MODEL and its data and submit a job (with --wait: exit 0 succeeded, 1 failed,
    2 refused).

    Without --spec the job trains 1000 steps on --train and evaluates on --eval. With
    --workers, --parameter-servers or --evaluator it trains on a cluster; `k2e status`
    shows its members.
    """
    st = state(ctx)
    for path in (model, train, eval_data):
        if path is not None and not path.is_file():
            st.err.print(f"no such file: {path}")
            raise typer.Exit(EXIT_REJECTED)
    try:
        spec = build_spec(spec_file, settings or [])
    except SpecError as exc:
        st.err.print(str(exc))
        raise typer.Exit(EXIT_REJECTED) from exc
    if deterministic:
        spec["deterministic"] = True
    if dry_run:
        shape = cluster_shape(spec, workers, parameter_servers, evaluator)
        if shape is not None:
            spec["distribution"] = shape
        _dry_run(st, spec, model, train, eval_data, priority, as_json)
        return
    with st.client() as client:
        spec["keras_model_path"] = _upload(st, client, "model", model)
        train_id = _upload(st, client, "dataset", train)
        spec.setdefault("train", {})
        if isinstance(spec["train"], dict):
            spec["train"]["dataset"] = train_id
            spec["train"].setdefault("max_steps", DEFAULT_MAX_STEPS)
        if eval_data is not None:
            same = eval_data.resolve() == train.resolve()
            eval_id = train_id if same else _upload(st, client, "dataset", eval_data)
            spec.setdefault("eval", {})
            if isinstance(spec["eval"], dict):
                spec["eval"]["dataset"] = eval_id
        try:
            shape = cluster_shape(spec, workers, parameter_servers, evaluator)
            job = client.submit(spec, idempotency_key, priority=priority, distribution=shape)
        except ProblemError as exc:
            print_problem(st.err, exc, "spec refused" if exc.status == 422 else "submit")
            raise typer.Exit(EXIT_REJECTED if exc.status in (400, 413, 422) else 1) from exc
        if as_json and not wait:
            print_json(st.out, job)
            return
        st.err.print(f"submitted job {job.id} ({job.status})")
        if not wait:
            st.err.print(f"follow it with `k2e watch {job.id}`")
            return
        code, _ = watch_job(st, client, job.id, cancel_on_interrupt)
    raise typer.Exit(code)


def _dry_run(
    st: CliState,
    spec: dict[str, Any],
    model: Path,
    train: Path,
    eval_data: Path | None,
    priority: str | None,
    as_json: bool,
) -> None:
    """The plan of the job, its files sent with the check (one multipart request) and
    kept nowhere."""
    spec.setdefault("train", {})
    if isinstance(spec["train"], dict):
        spec["train"].setdefault("max_steps", DEFAULT_MAX_STEPS)
    with st.client() as client:
        try:
            plan = client.plan(spec, model, train, eval_data, priority=priority)
        except ProblemError as exc:
            print_problem(st.err, exc, "spec refused" if exc.status == 422 else "dry run")
            raise typer.Exit(EXIT_REJECTED if exc.status in (400, 413, 422) else 1) from exc
    if as_json:
        print_json(st.out, plan)
        return
    st.err.print("dry run: nothing was submitted or kept")
    print_plan(st.out, plan)
