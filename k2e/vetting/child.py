"""The inspection child: ``python -m k2e.vetting.child``, started by k2e.vetting.runner.

It reads one JSON request on stdin, loads what it needs (k2e.vetting.sealing), confines
itself (k2e.vetting.confinement), seals, applies its limits, then says :data:`READY` on
stdout and inspects the upload: a model file (k2e.vetting.inspection, keras_archive) or a
dataset (the bounded readers of k2e/formats). Its answer is one JSON line on stdout; on
stderr it says how it was confined (:data:`CONFINED`) and what it needed once sealed
(:data:`LATE`), which the parent logs once.
"""

import json
import sys
from collections.abc import Callable
from typing import Any

from k2e.errors import InvalidUpload
from k2e.formats.read_limits import ReadLimits
from k2e.vetting.configs import VetPolicy
from k2e.vetting.confinement import confine, limit
from k2e.vetting.sealing import Seal, prepare

READY = "k2e-sandbox: reading"
CONFINED = "k2e-sandbox: confined: "
LATE = "k2e-sandbox: needed after confinement: "


def _probe(probe: dict[str, Any]) -> dict[str, Any]:
    """What a confined child can reach: a TCP connection, the named files."""
    import socket

    found: dict[str, Any] = {"connected": False, "read": []}
    host, port = probe["connect"]
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            found["connected"] = True
    except OSError as exc:
        found["connect_error"] = str(exc)
    for secret in probe["secrets"]:
        try:
            with open(secret, "rb") as f:
                f.read(1)
            found["read"].append(secret)
        except OSError:
            pass
    return found


def main() -> int:
    """The child: read the request on stdin, apply the limits, inspect, answer in JSON."""
    request = json.loads(sys.stdin.buffer.read())
    prepare()
    from k2e.formats.csvdata import inspect_csv
    from k2e.formats.examples import inspect_tfrecord
    from k2e.formats.npz import inspect_npz
    from k2e.vetting.inspection import inspect_h5
    from k2e.vetting.keras_archive import inspect_keras

    request["path"], confined = confine(request["path"], list(request.get("hidden", [])))
    print(CONFINED + ", ".join(confined), file=sys.stderr, flush=True)
    seal = Seal()
    if "probe" not in request:  # the probe tries to read what it must not
        seal.close([request["path"]])
    limit(int(request["cpu_seconds"]), int(request["memory_bytes"]))
    print(READY, flush=True)
    if "probe" in request:
        print(json.dumps({**_probe(request["probe"]), "confined": confined}), flush=True)
        return 0
    answer: dict[str, Any]
    try:
        summary: dict[str, Any]
        if request.get("kind") == "dataset":
            readers: dict[str, Callable[..., Any]] = {
                "npz": inspect_npz,
                "csv": inspect_csv,
                "tfrecord": inspect_tfrecord,
            }
            found = readers[request["format"]](
                request["path"], ReadLimits(**request["read_limits"])
            )
            summary = {
                "num_examples": found.num_examples,
                "arrays": found.arrays,
                "dtypes": found.dtypes,
            }
        else:
            policy = VetPolicy.of(
                request["custom_names"],
                bool(request["allow_lambda"]),
                bool(request.get("defer_custom")),
            )
            inspect = inspect_keras if request["format"] == "keras" else inspect_h5
            summary = inspect(request["path"], policy).model_dump(mode="json")
        answer = {"ok": True, "summary": summary}
    except InvalidUpload as exc:
        answer = {"ok": False, "detail": exc.detail}
    except MemoryError:
        answer = {
            "ok": False,
            "detail": f"inspecting the file needed more than {request['memory_bytes']} bytes",
        }
    except Exception as exc:  # the file's fault: it is the only input
        answer = {"ok": False, "detail": f"the file could not be read ({type(exc).__name__})"}
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    fault = seal.fault()
    if fault is not None:
        print(f"{LATE}{fault}", file=sys.stderr, flush=True)
        if not answer["ok"]:  # not the file's fault: the server's
            answer = {"ok": False, "fault": fault}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
