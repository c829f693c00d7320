"""The committed OpenAPI spec is what the app serves."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_spec_matches_the_app() -> None:
    rendered = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, 'scripts'); import export_openapi; "
            "print(export_openapi.render(), end='')",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "openapi" / "openapi.json").read_text()
    assert json.loads(committed) == json.loads(rendered), "run `make openapi` and commit"


def test_spec_documents_the_contract() -> None:
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    paths = spec["paths"]
    for path in (
        "/healthz",
        "/readyz",
        "/models",
        "/models/{model_id}",
        "/datasets",
        "/convert",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/savedmodel",
        "/jobs/{job_id}/checkpoints",
        "/jobs/{job_id}/checkpoints/{step}",
        "/custom-objects",
    ):
        assert path in paths, path
    body = paths["/convert"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"] == "#/components/schemas/ConvertRequest"
    assert "multipart/form-data" in body
    assert "ConvertRequest" in spec["components"]["schemas"]
    assert "application/problem+json" in paths["/convert"]["post"]["responses"]["422"]["content"]
