"""The deployable monitoring (monitoring/, docker-compose.yml's prometheus and grafana):
Prometheus's own `promtool` accepts the rules and the scrape config, and every metric the
alerts and the Grafana dashboard query is one GET /metrics serves."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import ADMIN

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
ALERTS = MONITORING / "alerts.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
PROVISIONING = MONITORING / "grafana" / "provisioning"
# Series Prometheus adds itself to every target.
PROMETHEUS_OWN = {"up"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:  # under CI a skip fails the run (tests/support/ci_skips.py)
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def served_names(tmp_path_factory: pytest.TempPathFactory, redis_server) -> set[str]:  # noqa: ANN001
    """Every sample name GET /metrics can serve (each family's, with its suffixes)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), redis_url=redis_server.url)
    with TestClient(create_app(settings)) as client:
        client.get("/healthz")
        text = client.get("/metrics", headers=ADMIN).text
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def queried_names(promql: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or values)."""
    without_strings = re.sub(r'"[^"]*"', '""', promql)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    return {
        m.group(1)
        for m in re.finditer(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", without_ranges)
        if m.group(1).startswith("k2e_") or m.group(1) in PROMETHEUS_OWN
    }


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    exprs = []
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [target["expr"] for target in panel.get("targets", [])]
    return exprs


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(alert_exprs()) >= 8


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    # The container's paths, pointed at local copies: promtool opens what the config names.
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    (tmp_path / "token").write_text("a-token-for-promtool-0123")
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(tmp_path / "token")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_and_dashboard_query_only_metrics_k2e_serves(served_names: set[str]) -> None:
    exprs = alert_exprs() + dashboard_exprs()
    assert len(dashboard_exprs()) >= 15
    queried = set().union(*map(queried_names, exprs))
    assert {"k2e_queue_oldest_waiting_seconds", "k2e_http_requests_total"} <= queried
    unknown = queried - served_names - PROMETHEUS_OWN
    assert not unknown, f"queried but not served by GET /metrics: {sorted(unknown)}"


def test_compose_prometheus_scrapes_the_api_with_the_metrics_token(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    mounts = dict(_mount(v) for v in prometheus["volumes"])
    for source in ("./monitoring/prometheus.yml", "./monitoring/alerts.yml"):
        assert (ROOT / source).is_file()
        assert source in mounts
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == [mounts["./monitoring/alerts.yml"]]
    assert "--config.file=" + mounts["./monitoring/prometheus.yml"] in prometheus["command"]
    (secret,) = prometheus["secrets"]
    assert compose["secrets"][secret] == {"environment": "K2E_METRICS_TOKEN"}
    assert "K2E_METRICS_TOKEN" in services["api"]["environment"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["credentials_file"] == f"/run/secrets/{secret}"
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    assert any(str(port).endswith(":8000") for port in services["api"]["ports"])


def test_compose_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(_mount(v) for v in grafana["volumes"])
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "k2e.yml").read_text())["providers"]
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    for path in DASHBOARDS.glob("*.json"):
        dashboard = json.loads(path.read_text())
        uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
        assert uids == {source["uid"]}, path


def _mount(entry: str) -> tuple[str, str]:
    source, target = entry.split(":")[:2]
    return source, target
