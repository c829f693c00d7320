"""Whether the inspection sandbox works on this server: checked when the API starts.

Every upload is inspected by a confined child (k2e.vetting.sandbox). When that child
cannot work at all (it cannot start, or cannot load what it needs once confined) every
upload would be refused one at a time, each with a message blaming the file. So the API
inspects a tiny model of its own at start, exactly as an upload's (written into the
uploads' folder, same limits): a failure is logged once as an error and answers /readyz
and every upload with a 503 saying what is wrong. (Limits too tight for the sample are
only a warning: each upload's 422 names the limit.) The result is kept per process and
per configuration of the child.
"""

import json
import logging
import threading
import time
import uuid
from pathlib import Path

import h5py

from k2e.errors import InvalidUpload, Unavailable
from k2e.vetting.configs import VetPolicy
from k2e.vetting.confinement import reachable_by_anyone
from k2e.vetting.sandbox import SandboxLimits, inspect_model_file

log = logging.getLogger("k2e.vetting.selfcheck")

# A Keras 2.15 Sequential model's configs (one Dense layer), as model.save(.h5) writes them.
_DENSE = {
    "name": "y",
    "trainable": True,
    "dtype": "float32",
    "units": 1,
    "activation": "linear",
    "use_bias": True,
    "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
    "bias_initializer": {"class_name": "Zeros", "config": {}},
}
SAMPLE_MODEL_CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "k2e_sandbox_check",
        "layers": [
            {
                "class_name": "InputLayer",
                "config": {"batch_input_shape": [None, 2], "dtype": "float32", "name": "x"},
            },
            {"class_name": "Dense", "config": _DENSE},
        ],
    },
}
SAMPLE_TRAINING_CONFIG = {
    "loss": "mse",
    "metrics": None,
    "optimizer_config": {"class_name": "SGD", "config": {"name": "SGD", "learning_rate": 0.01}},
}


def write_sample_model(path: Path) -> None:
    """A Keras HDF5 file the inspection reads like any upload (configs only, no weights)."""
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = "2.15.0"
        h5.attrs["backend"] = "tensorflow"
        h5.attrs["model_config"] = json.dumps(SAMPLE_MODEL_CONFIG)
        h5.attrs["training_config"] = json.dumps(SAMPLE_TRAINING_CONFIG)
        h5.create_group("model_weights")
    path.chmod(0o644)  # as an upload's file: the child drops to nobody where it would


class SandboxCheck:
    """The check, run in a background thread from its creation; :meth:`problem` waits."""

    def __init__(self, folder: Path, limits: SandboxLimits) -> None:
        self.folder = folder
        self.limits = limits
        self._problem: str | None = None
        self.inconclusive = False  # the sample could not be written: check again next time
        self._done = threading.Event()
        threading.Thread(target=self._run, name="k2e-sandbox-check", daemon=True).start()

    def problem(self) -> str | None:
        """Why uploads cannot be inspected on this server, or None when they can."""
        # The check is one inspection: it ends within the child's timeout.
        if not self._done.wait(self.limits.timeout_s + 30):
            return "the inspection sandbox's start-up check has not ended"
        return self._problem

    def require(self) -> None:
        """Raise Unavailable (503) saying what is wrong when uploads cannot be inspected."""
        problem = self.problem()
        if problem is not None:
            raise Unavailable(problem)

    def _run(self) -> None:
        sample = self.folder / f".sandbox-check-{uuid.uuid4().hex}.h5"
        started = time.monotonic()
        try:
            write_sample_model(sample)
        except OSError as exc:  # the folder went away (or is full): no verdict on the child
            log.warning("inspection sandbox not checked: writing %s: %s", sample, exc)
            self.inconclusive = True
            self._done.set()
            return
        try:
            inspect_model_file(sample, "h5", VetPolicy.of(()), self.limits)
        except Unavailable as exc:
            self._problem = exc.detail
        except InvalidUpload as exc:
            # The sandbox works, its limits are tight: each upload's 422 names the limit.
            log.warning(
                "the inspection sandbox refuses k2e's own sample model (%s): its limits "
                "(K2E_INSPECT_CPU_S=%s, K2E_INSPECT_MEMORY_BYTES=%s, K2E_INSPECT_TIMEOUT_S=%s) "
                "may be too tight for real uploads",
                exc.detail,
                self.limits.cpu_seconds,
                self.limits.memory_bytes,
                self.limits.timeout_s,
            )
        except Exception as exc:  # anything else stops every upload the same way
            self._problem = f"the inspection sandbox cannot run: {type(exc).__name__}: {exc}"
        finally:
            sample.unlink(missing_ok=True)
            self._done.set()
        if self._problem is None:
            log.info("inspection sandbox checked (%.2f s)", time.monotonic() - started)
        else:
            log.error("uploads will be refused (503) until this is fixed: %s", self._problem)


_checks: dict[tuple[object, ...], SandboxCheck] = {}
_checks_lock = threading.Lock()


def sandbox_check(folder: Path, limits: SandboxLimits) -> SandboxCheck:
    """The check for uploads received in ``folder`` under ``limits``: started on the first
    call (the API's start), the same one afterwards."""
    # What decides whether the child works: its limits, and whether it drops to nobody
    # (it does when the upload's folder is reachable by other users).
    reachable = reachable_by_anyone(str(folder))
    key = (limits.cpu_seconds, limits.memory_bytes, limits.timeout_s, reachable)
    with _checks_lock:
        if key not in _checks or _checks[key].inconclusive:
            _checks[key] = SandboxCheck(folder, limits)
        return _checks[key]
