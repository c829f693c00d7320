"""Dockerfile, docker-compose.yml and .dockerignore agree with the code they ship.

Nothing here builds an image: the files are parsed and checked against pyproject.toml,
k2e.settings.Settings, launcher's commands and the modules those commands name.
"""

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from k2e.launcher import stack as launcher
from k2e.settings import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

APP_SERVICES = ("api", "worker", "worker-gpu")
PYTHONS = ("python", "python3", "python3.11")


# --------------------------------------------------------------------------- parsing


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, base first."""
        out: list[Stage] = []
        while name in self.stages:
            out.insert(0, self.stages[name])
            name = self.stages[name].base
        return out

    def instructions(self, name: str, keyword: str) -> list[str]:
        return [rest for stage in self.chain(name) for rest in stage.args(keyword)]

    def env(self, name: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for rest in self.instructions(name, "ENV"):
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        return env

    def cmd(self, name: str) -> list[str]:
        cmds = self.instructions(name, "CMD")
        assert cmds, f"stage {name!r} has no CMD"
        return _command(cmds[-1])

    def user(self, name: str) -> str | None:
        users = self.instructions(name, "USER")
        return users[-1] if users else None

    def runs(self, name: str) -> str:
        """Every RUN of the stage itself (not of its parents), joined."""
        return "\n".join(self.stages[name].args("RUN"))


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, f"cannot parse FROM line: {line!r}"
            name = m.group(2) or f"#{len(stages)}"
            stage = stages[name] = Stage(name=name, base=m.group(1))
        elif stage is None:
            assert keyword == "ARG", f"only ARG may precede the first FROM, got {line!r}"
            key, _, value = rest.partition("=")
            global_args[key] = value
        else:
            stage.instructions.append((keyword, rest))
    return Dockerfile(global_args, stages)


def _command(value: Any) -> list[str]:
    """An exec-form (JSON / YAML list) or shell-form command as argv."""
    if isinstance(value, list):
        return [str(v) for v in value]
    value = str(value).strip()
    if value.startswith("["):
        return json.loads(value)
    return shlex.split(value)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _volume(entry: Any) -> tuple[str, str]:
    if isinstance(entry, dict):
        return str(entry.get("source")), str(entry["target"])
    source, target = str(entry).split(":")[:2]
    return source, target


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


def target(service: dict[str, Any]) -> str:
    build = service["build"]
    assert isinstance(build, dict), "app services must build a Dockerfile target"
    return build["target"]


def effective_command(dockerfile: Dockerfile, service: dict[str, Any]) -> list[str]:
    if "command" in service:
        return _command(service["command"])
    return dockerfile.cmd(target(service))


def launcher_argv(argv: list[str]) -> list[str]:
    """A launcher command with its interpreter path replaced by a bare ``python``."""
    return ["python", *argv[1:]]


def normalise(argv: list[str]) -> list[str]:
    assert argv[0] in PYTHONS, f"command must run the image's Python, got {argv[0]!r}"
    return ["python", *argv[1:]]


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias or info.alias
        if isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


# --------------------------------------------------------------------------- compose


def test_compose_parses_with_the_expected_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "compose spec files carry no top-level version"
    assert {"redis", "postgres", *APP_SERVICES} <= set(compose["services"])


def test_only_the_gpu_worker_is_behind_a_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["worker-gpu"].get("profiles") == ["gpu"]
    for name in ("redis", "postgres", "api", "worker"):
        assert not services[name].get("profiles"), f"{name} must start without --profile"


def test_gpu_worker_reserves_nvidia_gpus(services: dict[str, dict[str, Any]]) -> None:
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and d.get("count") == "all" and "gpu" in d["capabilities"]
        for d in devices
    ), devices


def test_backing_services(services: dict[str, dict[str, Any]]) -> None:
    redis, postgres = services["redis"], services["postgres"]
    assert str(redis["image"]).startswith("redis:7")
    assert "--appendonly yes" in " ".join(_command(redis["command"]))
    assert "redis-cli ping" in " ".join(_command(redis["healthcheck"]["test"]))
    assert redis.get("volumes"), "Redis's append-only file must live on a volume"
    assert str(postgres["image"]).startswith("postgres:15")
    assert _env(postgres) == {
        "POSTGRES_DB": "k2e",
        "POSTGRES_USER": "k2e",
        "POSTGRES_PASSWORD": "k2e",
    }
    assert "pg_isready" in " ".join(_command(postgres["healthcheck"]["test"]))


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_backends(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends = services[name]["depends_on"]
    assert isinstance(depends, dict), "depends_on needs the long form to carry a condition"
    for backend in ("redis", "postgres"):
        assert depends[backend]["condition"] == "service_healthy"
        assert services[backend].get("healthcheck"), f"{backend} has no healthcheck to wait on"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_point_at_the_compose_backends(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = _env(services[name])
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    pg = _env(services["postgres"])
    assert env["DATABASE_URL"] == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/"
        f"{pg['POSTGRES_DB']}"
    )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_env_names_are_settings_k2e_reads(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    known = settings_env_names()
    assert {"REDIS_URL", "DATABASE_URL", "K2E_DATA_DIR"} <= known  # the helper itself works
    # The standard AWS variables are the S3 client's (K2E_STORAGE_URL's credentials).
    unknown = {
        key
        for key in _env(services[name])
        if key.upper() not in known and not key.startswith("AWS_")
    }
    assert not unknown, f"{name} sets variables k2e.settings.Settings ignores: {unknown}"


def test_dockerfile_k2e_env_names_are_settings_k2e_reads(dockerfile: Dockerfile) -> None:
    known = settings_env_names()
    for stage in dockerfile.stages:
        unknown = {k for k in dockerfile.env(stage) if k.startswith("K2E_") and k not in known}
        assert not unknown, f"stage {stage} sets unknown K2E_ variables: {unknown}"


def test_app_services_share_no_volume_only_the_bucket(
    compose: dict[str, Any], dockerfile: Dockerfile
) -> None:
    """Share-nothing nodes: each app service has a scratch volume of its own at its
    K2E_DATA_DIR, and all of them name the same bucket on the compose S3 server."""
    named = set(compose.get("volumes") or {})
    scratch: dict[str, str] = {}
    buckets = set()
    for name in APP_SERVICES:
        service = compose["services"][name]
        env = {**dockerfile.env(target(service)), **_env(service)}
        data_dir = env.get("K2E_DATA_DIR")
        assert data_dir, f"{name} has no K2E_DATA_DIR"
        volumes = [_volume(v) for v in service.get("volumes") or []]
        assert [dst.rstrip("/") for _, dst in volumes] == [data_dir.rstrip("/")], volumes
        assert volumes[0][0] in named, f"{name}: {volumes[0][0]} is not a named volume"
        scratch[name] = volumes[0][0]
        buckets.add((env.get("K2E_STORAGE_URL"), env.get("K2E_S3_ENDPOINT_URL")))
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            assert env.get(variable), f"{name} has no {variable}"
    assert len(set(scratch.values())) == len(APP_SERVICES), f"a volume is shared: {scratch}"
    assert buckets == {("s3://k2e/k2e", "http://s3:8333")}, buckets
    s3 = compose["services"]["s3"]
    assert "-s3" in _command(s3["command"])
    assert "-s3.port=8333" in _command(s3["command"])
    bucket = compose["services"]["bucket"]
    assert "s3://k2e" in " ".join(_command(bucket["entrypoint"]))
    for name in APP_SERVICES:
        depends = compose["services"][name]["depends_on"]
        assert depends["bucket"]["condition"] == "service_completed_successfully"


def test_api_port_matches_the_command(
    services: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    argv = effective_command(dockerfile, services["api"])
    port = option(argv, "--port")
    assert option(argv, "--host") == "0.0.0.0"
    container_ports = [str(p).rsplit(":", 1)[-1] for p in services["api"]["ports"]]
    assert container_ports == [port]
    assert [str(p) for p in services["api"]["ports"]] == ["8000:8000"]
    assert dockerfile.instructions("api", "EXPOSE") == [port]


# --------------------------------------------------------------------------- Dockerfile


def test_compose_build_targets_are_dockerfile_stages(
    services: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        assert isinstance(build, dict), f"{name}: build must be a mapping with a target"
        assert "target" in build, f"{name}: build without target"
        assert build.get("context", ".") == "."
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
        assert build["target"] in dockerfile.stages, f"{name}: no stage {build['target']!r}"
    assert {target(services[n]) for n in APP_SERVICES} == set(APP_SERVICES)


def test_stage_bases(dockerfile: Dockerfile) -> None:
    stages = dockerfile.stages
    assert stages["base"].base == "python:3.11-slim"
    assert stages["api"].base == "base"
    assert stages["worker"].base == "base"
    assert stages["worker-gpu"].base == "${GPU_BASE}"
    assert dockerfile.global_args["GPU_BASE"] == "tensorflow/tensorflow:2.15.0-gpu"


@pytest.mark.parametrize("stage", APP_SERVICES)
def test_images_run_as_k2e_with_the_shared_environment(dockerfile: Dockerfile, stage: str) -> None:
    assert dockerfile.user(stage) == "k2e"
    env = dockerfile.env(stage)
    assert env.get("PIP_NO_CACHE_DIR") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("K2E_DATA_DIR") == "/data"
    # The data folder must exist and belong to k2e, or a fresh volume is root-owned.
    runs = "\n".join(dockerfile.instructions(stage, "RUN"))
    assert re.search(r"chown\s+(-\S+\s+)*k2e(:k2e)?\s+/data\b", runs), runs
    assert "/app" in dockerfile.instructions(stage, "WORKDIR")


@pytest.mark.parametrize("stage", APP_SERVICES)
def test_images_copy_the_project(dockerfile: Dockerfile, stage: str) -> None:
    copied = set()
    for rest in dockerfile.instructions(stage, "COPY"):
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        copied.update(p.rstrip("/") for p in parts[:-1])
    assert {"pyproject.toml", "README.md", "k2e", "service", "worker"} <= copied


def test_copied_files_exist_and_are_not_dockerignored(dockerfile: Dockerfile) -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in dockerfile.stages:
        for rest in dockerfile.stages[stage].args("COPY"):
            if "--from" in rest:
                continue
            for src in [p for p in shlex.split(rest) if not p.startswith("--")][:-1]:
                src = src.rstrip("/")
                assert (ROOT / src).exists(), f"COPY {src}: not in the build context"
                hits = [p for p in ignored if fnmatch.fnmatch(src, p.rstrip("/"))]
                assert not hits, f"COPY {src} is excluded by .dockerignore {hits}"


def test_dockerignore_excludes_local_state() -> None:
    entries = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", "data", ".git", "__pycache__", ".pytest_cache", "bench/out"} <= entries


def test_pyproject_worker_extra_pins_tensorflow(pyproject: dict[str, Any]) -> None:
    extra = [_requirement(d) for d in pyproject["project"]["optional-dependencies"]["worker"]]
    assert "tensorflow-cpu==2.15.1" in extra
    assert "tensorflow-estimator==2.15.0" in extra
    assert not any(d.startswith("tensorflow") for d in pyproject["project"]["dependencies"])


def test_the_api_the_command_and_the_spec_state_pyprojects_version(
    pyproject: dict[str, Any], tmp_path: Path
) -> None:
    version = pyproject["project"]["version"]
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert spec["info"]["version"] == version
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path))
    assert app.openapi()["info"]["version"] == version
    done = subprocess.run(
        [sys.executable, "-m", "k2e.cli", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"k2e {version}"


def _requirement(line: str) -> str:
    """A requirement without its environment marker (the worker extra's are Python 3.11's)."""
    return line.split(";", 1)[0].strip()


def _pins(pyproject: dict[str, Any]) -> dict[str, str]:
    extra = [_requirement(d) for d in pyproject["project"]["optional-dependencies"]["worker"]]
    return dict(d.split("==", 1) for d in extra if "==" in d)


def _pip_installs(runs: str) -> list[list[str]]:
    """The arguments of each ``pip install`` in a stage's RUN lines."""
    out = []
    for m in re.finditer(r"\bpip3?\s+install\s+([^&;|\n]*)", runs):
        out.append([a for a in shlex.split(m.group(1)) if not a.startswith("-")])
    return out


def test_api_image_installs_the_project_without_tensorflow(dockerfile: Dockerfile) -> None:
    installs = _pip_installs(dockerfile.runs("api"))
    assert installs == [[".[server]"]], installs


def test_cpu_worker_installs_the_worker_extra(
    dockerfile: Dockerfile, pyproject: dict[str, Any]
) -> None:
    installs = _pip_installs(dockerfile.runs("worker"))
    assert installs == [[".[worker]"]], installs
    assert "tensorflow-cpu" in _pins(pyproject)


def test_gpu_worker_installs_cuda_tensorflow_at_the_extra_pins(
    dockerfile: Dockerfile, pyproject: dict[str, Any]
) -> None:
    pins = _pins(pyproject)
    installs = _pip_installs(dockerfile.runs("worker-gpu"))
    assert len(installs) == 1, installs
    args = installs[0]
    assert ".[server]" in args
    # The worker extra would add tensorflow-cpu next to tensorflow: not in this image.
    assert not any("[worker]" in a or a.startswith("tensorflow-cpu") for a in args), args
    assert f"tensorflow=={pins['tensorflow-cpu']}" in args
    assert f"tensorflow-estimator=={pins['tensorflow-estimator']}" in args
    assert "tensorflow==2.15.1" in args
    assert "tensorflow-estimator==2.15.0" in args


# --------------------------------------------------------------------------- commands


def test_api_command_is_the_launchers(
    services: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    argv = normalise(effective_command(dockerfile, services["api"]))
    assert argv == launcher_argv(launcher.api_command("0.0.0.0", 8000))


def test_cpu_worker_command_is_the_launchers(
    services: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    argv = normalise(effective_command(dockerfile, services["worker"]))
    assert option(argv, "-Q") == "cpu"
    assert argv == launcher_argv(launcher.worker_command("cpu"))


def test_gpu_worker_command_is_one_job_per_child_on_the_gpu_queue(
    services: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    argv = normalise(effective_command(dockerfile, services["worker-gpu"]))
    assert option(argv, "-Q") == "gpu"
    assert option(argv, "--max-tasks-per-child") == "1"
    assert option(argv, "--concurrency") == "1"
    base = launcher_argv(launcher.worker_command("gpu"))
    assert argv[: len(base)] == base
    assert argv[len(base) :] == ["--max-tasks-per-child", "1"]


def test_queue_names_match_k2e_tasks(
    services: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    from k2e.jobs.queueing import CPU_QUEUE, GPU_QUEUE

    assert option(effective_command(dockerfile, services["worker"]), "-Q") == CPU_QUEUE
    assert option(effective_command(dockerfile, services["worker-gpu"]), "-Q") == GPU_QUEUE


@pytest.mark.parametrize("name", APP_SERVICES)
def test_modules_named_in_commands_exist(
    services: dict[str, dict[str, Any]], dockerfile: Dockerfile, name: str
) -> None:
    argv = effective_command(dockerfile, services[name])
    checked = 0
    if "celery" in argv:
        module = option(argv, "-A")
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
        checked += 1
    if "uvicorn" in argv:
        spec = argv[argv.index("uvicorn") + 1]
        module, _, attr = spec.partition(":")
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), spec
        assert re.search(rf"^def {re.escape(attr)}\(", path.read_text(), re.M), spec
        checked += 1
    assert checked == 1, argv


def test_api_healthcheck_probes_healthz_with_urllib(dockerfile: Dockerfile) -> None:
    checks = dockerfile.instructions("api", "HEALTHCHECK")
    assert len(checks) == 1
    check = checks[0]
    port = option(dockerfile.cmd("api"), "--port")
    probe = _command(check.split("CMD", 1)[1])
    assert probe[:2] == ["python", "-c"], probe  # slim has no curl or wget
    compile(probe[2], "<healthcheck>", "exec")
    assert "urllib.request.urlopen(" in probe[2]
    assert f"http://127.0.0.1:{port}/healthz" in probe[2]
    routes = (ROOT / "service" / "routes" / "health.py").read_text()
    assert re.search(r"""\.get\(\s*["']/healthz["']""", routes), "no /healthz route"
