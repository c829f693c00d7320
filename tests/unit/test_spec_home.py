"""The spec's rules have one home, k2e.spec: the documented rules the schema checks are
raised by k2e.spec.rules; the server's spec limits and the tenant's ``max_steps`` quota
are read in k2e.spec.limits and nowhere else in the shipped packages, each limit's
refusal comes from there, and with its check switched off no other place refuses what
it refuses."""

import ast
import copy
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from k2e.errors import InvalidSpec
from k2e.schemas import ConvertRequest
from k2e.settings import Settings
from k2e.spec import checks, rules
from k2e.spec.limits import Limits, check_limits
from k2e.tenancy.bodies import EffectiveQuotas
from service.main import create_app
from tests.support.api_keys import TEST_ADMIN_KEY, admin_client, bearer, new_tenant

ROOT = Path(__file__).resolve().parents[2]
LIMITS_MODULE = ROOT / "k2e" / "spec" / "limits.py"
RULES_MODULE = ROOT / "k2e" / "spec" / "rules.py"
# (rule, spec, the refused field, the message: the library's words where it documents it)
DOCUMENTED = [
    ("neither-model", {}, (), rules.NEITHER_MODEL),
    (
        "both-models",
        {"keras_model": {"config": {}}, "keras_model_path": "m"},
        (),
        rules.BOTH_MODELS,
    ),
    ("gcs-path", {"keras_model_path": "gs://b/m.h5"}, ("keras_model_path",), rules.GCS_PATH),
    (
        "checkpoint-format",
        {"keras_model_path": "m", "checkpoint_format": "foo"},
        ("checkpoint_format",),
        rules.checkpoint_format_message("foo"),
    ),
    (
        "checkpoint-triggers",
        {
            "keras_model_path": "m",
            "config": {"save_checkpoints_steps": 1, "save_checkpoints_secs": 1},
        },
        ("config",),
        rules.CHECKPOINT_TRIGGER_BOTH,
    ),
    (
        "model-dir-name",
        {"keras_model_path": "m", "model_dir": "../x"},
        ("model_dir",),
        "plain folder",
    ),
]


@pytest.mark.parametrize(
    ("raw", "loc", "message"),
    [pytest.param(raw, loc, m, id=case) for case, raw, loc, m in DOCUMENTED],
)
def test_each_rule_the_schema_checks_is_raised_by_the_rules_module(
    raw: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ConvertRequest.model_validate(raw)
    [error] = refused.value.errors()
    assert error["loc"] == loc
    assert message in error["msg"]
    raised = error["ctx"]["error"]
    assert traceback.extract_tb(raised.__traceback__)[-1].filename == str(RULES_MODULE)


# The Settings fields ("Spec limits") that bound a field of the spec, and the quota that
# does: the tenant's max_steps.
SPEC_LIMIT_SETTINGS = {
    "max_steps",
    "max_batch_size",
    "max_shuffle_buffer",
    "max_model_params",
    "max_keep_checkpoints",
    "max_checkpoints_per_job",
    "min_keep_checkpoint_every_n_hours",
}
# Where a Settings or a tenant's quotas are held, as the code names them.
HOLDERS = {"settings", "get_settings", "quotas", "default_quotas"}


def _holder(node: ast.expr) -> str | None:
    """The last name of the expression an attribute is read from (``backend.settings`` →
    ``settings``, ``backend.tenants.quotas(tenant)`` → ``quotas``)."""
    if isinstance(node, ast.Call):
        return _holder(node.func)
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _limit_reads() -> dict[str, list[str]]:
    """Each module of k2e, service and worker that reads a spec limit off a Settings or a
    tenant's quotas, with what it reads. The command line and the client only show a
    tenant's quotas: they are left out."""
    found: dict[str, list[str]] = {}
    for package in ("k2e", "service", "worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.parent.name in ("cli", "client"):
                continue
            reads = _reads_in(ast.parse(path.read_text(), str(path)))
            if reads:
                found[str(path.relative_to(ROOT))] = reads
    return found


def _reads_in(tree: ast.AST) -> list[str]:
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in SPEC_LIMIT_SETTINGS
        and _holder(node.value) in HOLDERS
    ]


def test_the_spec_limits_are_read_in_one_module() -> None:
    reads = _limit_reads()
    assert set(reads) == {"k2e/spec/limits.py"}, reads
    # Every limit, and the tenant's quota.
    names = {read.rsplit(".", 1)[1] for read in reads["k2e/spec/limits.py"]}
    assert names == SPEC_LIMIT_SETTINGS
    assert "quotas.max_steps" in reads["k2e/spec/limits.py"]


def test_the_scan_sees_a_limit_read_elsewhere() -> None:
    source = (
        "def f(backend, spec, settings):\n"
        "    return spec.train.max_steps > backend.tenants.quotas(t).max_steps or (\n"
        "        spec.batch_size > settings.max_batch_size\n"
        "    )\n"
    )
    assert _reads_in(ast.parse(source)) == [
        "backend.tenants.quotas(t).max_steps",
        "settings.max_batch_size",
    ]


SERVER = Settings(
    max_steps=1000,
    max_batch_size=64,
    max_shuffle_buffer=10_000,
    max_keep_checkpoints=10,
    max_checkpoints_per_job=20,
    min_keep_checkpoint_every_n_hours=1.0,
)
QUOTAS = EffectiveQuotas(max_active_jobs=1, max_bytes=1, max_steps=500, max_run_s=60)
BASE: dict[str, Any] = {
    "keras_model_path": "models/m.h5",
    "train": {"dataset": "d", "max_steps": 5},
    "eval": {"dataset": "d"},
    "config": {},
}

# (case, spec changes, the refused field, what its message names)
RULES = [
    ("tenant-max-steps", {"train.max_steps": 501}, ("train", "max_steps"), "tenant's ceiling 500"),
    ("batch-size", {"train.batch_size": 65}, ("train", "batch_size"), "K2E_MAX_BATCH_SIZE"),
    ("eval-batch", {"eval.batch_size": 65}, ("eval", "batch_size"), "K2E_MAX_BATCH_SIZE"),
    (
        "shuffle-buffer",
        {"train.shuffle_buffer": 10_001},
        ("train", "shuffle_buffer"),
        "K2E_MAX_SHUFFLE_BUFFER",
    ),
    ("eval-steps", {"eval.steps": 1001}, ("eval", "steps"), "K2E_MAX_STEPS"),
    (
        "keep-all",
        {"config.keep_checkpoint_max": 0},
        ("config", "keep_checkpoint_max"),
        "keeps every checkpoint",
    ),
    (
        "keep-many",
        {"config.keep_checkpoint_max": 11},
        ("config", "keep_checkpoint_max"),
        "K2E_MAX_KEEP_CHECKPOINTS",
    ),
    (
        "keep-often",
        {"config.keep_checkpoint_every_n_hours": 0.5},
        ("config", "keep_checkpoint_every_n_hours"),
        "K2E_MIN_KEEP_CHECKPOINT_EVERY_N_HOURS",
    ),
    (
        "checkpoints-per-job",
        {"config.save_checkpoints_steps": 1, "train.max_steps": 21},
        ("config", "save_checkpoints_steps"),
        "K2E_MAX_CHECKPOINTS_PER_JOB",
    ),
]


def _spec(changes: dict[str, Any]) -> ConvertRequest:
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        section, field = path.split(".")
        raw[section][field] = value
    return ConvertRequest.model_validate(raw)


@pytest.mark.parametrize(
    ("changes", "loc", "text"), [pytest.param(c, loc, t, id=case) for case, c, loc, t in RULES]
)
def test_each_limit_is_refused_by_the_limits_module(
    changes: dict[str, Any], loc: tuple[str, ...], text: str
) -> None:
    check_limits(_spec({}), Limits.of(SERVER, QUOTAS))  # the base is within every limit
    with pytest.raises(InvalidSpec) as refused:
        check_limits(_spec(changes), Limits.of(SERVER, QUOTAS))
    assert [error.loc for error in refused.value.errors] == [loc]
    assert text in refused.value.errors[0].msg
    assert refused.value.detail == refused.value.errors[0].msg
    assert Path(refused.traceback[-1].path) == LIMITS_MODULE


def test_the_tenants_ceiling_is_the_one_error_when_both_max_steps_limits_are_passed() -> None:
    spec = _spec({"train.max_steps": 1001, "train.batch_size": 65})
    with pytest.raises(InvalidSpec) as refused:
        check_limits(spec, Limits.of(SERVER, QUOTAS))
    assert [e.msg for e in refused.value.errors] == [
        "max_steps 1001 is above the tenant's ceiling 500"
    ]
    # Without a tenant (the worker's second check), the server's limits answer, all of them.
    with pytest.raises(InvalidSpec) as server:
        check_limits(spec, Limits.of(SERVER))
    assert [e.loc for e in server.value.errors] == [("train", "max_steps"), ("train", "batch_size")]
    assert "K2E_MAX_STEPS" in server.value.detail


# --- through the API: with the limits' check off, nothing else refuses -----------------------


@pytest.fixture
def api(tmp_path: Path, redis_server) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_server.url,
        admin_key=TEST_ADMIN_KEY,
        max_steps=1000,
        max_batch_size=64,
    )
    with admin_client(create_app(settings)) as client:
        yield client


def _upload(api: TestClient, key: str, path: str, name: str, data: bytes) -> str:
    response = api.post(path, files={"file": (name, data)}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.parametrize(
    ("train", "loc", "text"),
    [
        pytest.param({"max_steps": 101}, "max_steps", "tenant's ceiling 100", id="tenant"),
        pytest.param(
            {"max_steps": 100, "batch_size": 65}, "batch_size", "K2E_MAX_BATCH_SIZE", id="server"
        ),
    ],
)
def test_the_limits_module_is_the_only_place_that_refuses(
    api: TestClient,
    seed_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    train: dict[str, int],
    loc: str,
    text: str,
) -> None:
    member = new_tenant(api, "limited", max_steps=100)
    model = _upload(api, member, "/models", "seed.h5", seed_files["model"])
    data = _upload(api, member, "/datasets", "train.npz", seed_files["data"])
    spec = {"keras_model_path": model, "train": {"dataset": data, **train}}
    refused = api.post("/convert", json=spec, headers=bearer(member))
    assert refused.status_code == 422, refused.text
    assert text in refused.json()["detail"]
    assert refused.json()["errors"][0]["loc"] == ["train", loc]

    monkeypatch.setattr(checks, "check_limits", lambda spec, limits: None)
    accepted = api.post("/convert", json=spec, headers=bearer(member))
    assert accepted.status_code == 202, accepted.text
