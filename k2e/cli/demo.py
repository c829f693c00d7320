"""``k2e demo``: the seed document's multi-input/multi-output example, end to end: build
the model and data, upload, train with live progress, download the SavedModel."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from k2e.cli.context import EXIT_FAILED, state
from k2e.cli.job_commands import print_serving_hint
from k2e.cli.watching import watch_job

NO_TENSORFLOW = (
    "k2e demo builds its example Keras model locally, and this Python has no TensorFlow.\n"
    "Run it from the environment `make run` uses (`make demo`, or `.venv/bin/k2e demo`), "
    "or install the worker extra on Python 3.11: pip install 'k2e[worker]'."
)


def demo(
    ctx: typer.Context,
    workdir: Annotated[Path, typer.Option(help="Where the example files go.")] = Path("k2e-demo"),
    max_steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 500,
) -> None:
    """Build the seed example, train it on k2e with live progress, download the SavedModel."""
    st = state(ctx)
    if importlib.util.find_spec("tensorflow") is None:
        st.err.print(NO_TENSORFLOW)
        raise typer.Exit(EXIT_FAILED)
    with st.client() as client:
        if not client.ready():
            st.err.print(
                f"no ready k2e API at {client.url}: start one with `make run` "
                "(or point K2E_URL at yours)"
            )
            raise typer.Exit(EXIT_FAILED)
        st.err.print("building the seed example model and data (TensorFlow loads in ~10 s)…")
        # A child process: TensorFlow is loaded there, never in the client's process.
        built = subprocess.run(
            [sys.executable, "-m", "k2e.examples.seed_files", str(workdir), str(max_steps)],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            st.err.print(f"building the example failed:\n{built.stderr[-2000:]}")
            raise typer.Exit(EXIT_FAILED)
        spec = json.loads((workdir / "spec.json").read_text())
        model = client.upload_model(workdir / "seed.h5")
        spec["keras_model_path"] = model.id
        spec["train"]["dataset"] = client.upload_dataset(workdir / "train.npz").id
        spec["eval"]["dataset"] = client.upload_dataset(workdir / "eval.npz").id
        job = client.submit(spec)
        st.err.print(f"submitted job {job.id}: {max_steps} steps of the seed example")
        code, ended = watch_job(st, client, job.id)
        if ended is None or code != 0:
            raise typer.Exit(code)
        version = client.download_savedmodel(job.id, workdir / "export")
    st.out.print(f"SavedModel in {version}")
    print_serving_hint(st.out, version)
