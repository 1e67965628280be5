"""docker-compose.yml, the Dockerfile and the monitoring configs, checked without Docker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from connectors.config import load_delivery_config
from streams import cli
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def env(service: str) -> dict[str, str]:
    raw = SERVICES[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def setting_env_names() -> set[str]:
    """Every environment variable Settings reads: CRM_<FIELD>, CRM_<FIELD>__<SUBFIELD>."""
    names = {"CRM_CONFIG"}  # the settings file (streams/settings.py: _FileSource)
    for name, field in Settings.model_fields.items():
        names.add(f"CRM_{name}".upper())
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.update(f"CRM_{name}__{sub}".upper() for sub in model.model_fields)
    return names


def test_services_and_pinned_images() -> None:
    assert {"kafka", "topics", "worker", "prometheus", "grafana"} <= SERVICES.keys()
    assert SERVICES["kafka"]["image"] == "apache/kafka:3.9.1"
    for name, service in SERVICES.items():
        image = service.get("image")
        if image is None:
            assert service.get("build"), f"{name}: neither image nor build"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag != "latest", f"{name}: {image} is not pinned"


@pytest.mark.parametrize(("service", "port"), [("worker", "6066"), ("deliver", "6067")])
def test_health_checked_on_healthz_of_the_exposed_port(service: str, port: str) -> None:
    spec = SERVICES[service]
    assert port in [str(p) for p in spec.get("expose", [])]
    probe = " ".join(spec["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in probe
    env_port = env(service).get("CRM_WEB_PORT")
    assert env_port in (None, port)


def test_worker_scales() -> None:
    worker = SERVICES["worker"]
    assert worker["build"] == "."
    assert "container_name" not in worker and "ports" not in worker
    assert "6066" in [str(p) for p in worker.get("expose", [])]
    for volume in worker.get("volumes", []):  # anonymous only: state is per replica
        assert ":" not in str(volume), f"worker volume {volume} would be shared or fixed"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_crm_env_vars_are_settings(service: str) -> None:
    unknown = {k for k in env(service) if k.startswith("CRM_")} - setting_env_names()
    assert not unknown, f"{service}: not settings: {sorted(unknown)}"


def test_settings_from_compose_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_CONFIG", raising=False)
    for key, value in env("worker").items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.bootstrap() == ["kafka:9092"]
    assert (settings.partitions, settings.web_port) == (4, 6066)
    assert env("topics")["CRM_PARTITIONS"] == env("worker")["CRM_PARTITIONS"]


def test_commands_parse_with_the_cli() -> None:
    worker = cli._parser().parse_args(SERVICES["worker"]["command"])
    assert worker.run is cli._worker
    for path in worker.rules:  # the image holds the project in /app
        assert (ROOT / Path(path).relative_to("/app")).is_dir()
    topics = SERVICES["topics"]
    assert cli._parser().parse_args(topics["command"]).run is cli._topics_create
    deliver = cli._parser().parse_args(SERVICES["deliver"]["command"])
    assert deliver.run is cli._deliver
    config = load_delivery_config(ROOT / Path(deliver.connectors).relative_to("/app"))
    volume = SERVICES["deliver"]["volumes"][0].split(":")[1]
    assert str(config.hold_dir).startswith(volume)  # holds survive a container restart
    assert topics["build"] == "." and topics["restart"] == "no"


def test_start_order() -> None:
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    worker_deps = SERVICES["worker"]["depends_on"]
    assert worker_deps["topics"]["condition"] == "service_completed_successfully"


def test_kafka_kraft_single_node() -> None:
    kafka = env("kafka")
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller" and kafka["CLUSTER_ID"]
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT_HOST://localhost:29092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert "29092:29092" in SERVICES["kafka"]["ports"]
    check = " ".join(SERVICES["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in check


def mounted(service: str, target: str) -> Path:
    for volume in SERVICES[service]["volumes"]:
        source, dest = str(volume).split(":")[:2]
        if dest == target:
            return ROOT / source
    raise AssertionError(f"{service}: nothing mounted on {target}")


def test_prometheus_scrapes_every_worker() -> None:
    config = yaml.safe_load(mounted("prometheus", "/etc/prometheus/prometheus.yml").read_text())
    sd = [sd for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])]
    assert any("worker" in sd["names"] and sd["port"] == 6066 for sd in sd)
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"crm-triggers-worker", "crm-triggers-deliver"}  # the alerts' job labels


def test_prometheus_loads_the_alert_rules() -> None:
    """rule_files resolve relative to prometheus.yml: each is mounted beside it. promtool
    checks the layout itself in tests/monitoring/test_alerts.py."""
    config = yaml.safe_load(mounted("prometheus", "/etc/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    for name in config["rule_files"]:
        rules = yaml.safe_load(mounted("prometheus", f"/etc/prometheus/{name}").read_text())
        assert rules["groups"] and all(group["rules"] for group in rules["groups"])


def test_grafana_provisioning() -> None:
    provisioning = mounted("grafana", "/etc/grafana/provisioning")
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
    assert env("grafana")["GF_AUTH_ANONYMOUS_ENABLED"] == "true"


def test_grafana_provisions_the_dashboards() -> None:
    provisioning = mounted("grafana", "/etc/grafana/provisioning")
    uid = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ][0]["uid"]
    providers = yaml.safe_load((provisioning / "dashboards" / "crm-triggers.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    folder = mounted("grafana", provider["options"]["path"])  # the provider reads the mount
    dashboards = sorted(folder.glob("*.json"))
    assert [d.name for d in dashboards] == ["crm-triggers.json"]
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"], path
        assert {"uid": uid, "type": "prometheus"} in [
            p.get("datasource") for p in dashboard["panels"]
        ], f"{path}: no panel on the provisioned datasource {uid!r}"


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r'^ENTRYPOINT \["crm-triggers"\]', text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}, "the image runs as root"
