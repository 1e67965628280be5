"""The Prometheus alert rules: promtool checks them and runs their unit tests
(monitoring/prometheus/alerts-test.yml), checks prometheus.yml as Compose mounts it, and
every alert has unit tests and a runbook entry in README "Operations". Also the fetch of
promtool itself (scripts/promtool.py) with stand-in apt-get and dpkg-deb."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import promtool as fetcher

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"
ALERTS_PATH = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS_PATH = PROMETHEUS_DIR / "alerts-test.yml"
ALERTS: dict[str, Any] = yaml.safe_load(ALERTS_PATH.read_text())
ALERT_TESTS: dict[str, Any] = yaml.safe_load(ALERT_TESTS_PATH.read_text())
RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]
ALERT_NAMES = [rule["alert"] for rule in RULES if "alert" in rule]


def run(promtool: Path, *args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} exit {proc.returncode}:\n{output}"
    return output


def test_check_rules(promtool: Path) -> None:
    output = run(promtool, "check", "rules", str(ALERTS_PATH.relative_to(ROOT)))
    assert f"SUCCESS: {len(RULES)} rules found" in output


def test_rule_unit_tests(promtool: Path) -> None:
    output = run(promtool, "test", "rules", str(ALERT_TESTS_PATH.relative_to(ROOT)))
    assert "SUCCESS" in output


def test_check_config_as_mounted_by_compose(promtool: Path, tmp_path: Path) -> None:
    """prometheus.yml and the files it names, laid out where docker-compose.yml mounts them:
    its rule_files resolve relative to /etc/prometheus/prometheus.yml."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for volume in compose["services"]["prometheus"]["volumes"]:
        source, dest = str(volume).split(":")[:2]
        target = tmp_path / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / source, target)
    config = tmp_path / "etc" / "prometheus" / "prometheus.yml"
    output = run(promtool, "check", "config", str(config), cwd=tmp_path)
    assert "SUCCESS: 1 rule files found" in output
    assert f"SUCCESS: {len(RULES)} rules found" in output


def test_alerts_are_complete() -> None:
    assert len(set(ALERT_NAMES)) == len(ALERT_NAMES), "an alert name is used twice"
    for rule in RULES:
        name = rule["alert"]
        assert re.fullmatch(r"Crm[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= annotations.keys(), name
        assert annotations["runbook"] == f"README.md#{name.lower()}", name


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in ALERT_TESTS["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert ALERT_TESTS["rule_files"] == ["alerts.yml"]
    assert not set(ALERT_NAMES) - firing, f"never tested firing: {set(ALERT_NAMES) - firing}"
    assert not set(ALERT_NAMES) - quiet, f"never tested quiet: {set(ALERT_NAMES) - quiet}"
    assert not (firing | quiet) - set(ALERT_NAMES), "tests of alerts that do not exist"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_a_readme_entry() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Operations\n(.*?)(?=^## )", readme, re.M | re.S)
    assert match, "README.md has no '## Operations' section followed by another section"
    section = match.group(1)
    anchors = {github_anchor(h) for h in re.findall(r"^#{3,4} (.+)$", section, re.M)}
    missing = [name for name in ALERT_NAMES if name.lower() not in anchors]
    assert not missing, f"no README Operations heading for {missing}"
    assert readme.index("## Logs") < readme.index("## Operations")


# --- scripts/promtool.py ------------------------------------------------------------------

FAKE_APT_GET = """#!/bin/sh
# stands in for apt-get: `download` fails until `update` has run (empty package lists)
echo "$@" >> "$FAKE_LOG"
case "$1" in
  update) [ -n "$FAKE_UPDATE_FAILS" ] && { echo "E: no network" >&2; exit 100; }
          touch "$FAKE_STATE/lists"; exit 0 ;;
  download) [ -f "$FAKE_STATE/lists" ] || { echo "E: Unable to locate package $2" >&2; exit 100; }
            echo deb > "$2_2.42.0+ds-5_amd64.deb"; exit 0 ;;
esac
exit 1
"""
FAKE_DPKG_DEB = """#!/bin/sh
# stands in for dpkg-deb: --field DEB Version, and -x DEB DIR
case "$1" in
  --field) echo "1:2.42.0+ds-5" ;;
  -x) mkdir -p "$3/usr/bin"
      printf '#!/bin/sh\\necho "promtool, version 2.42.0"\\n' > "$3/usr/bin/promtool"
      chmod +x "$3/usr/bin/promtool" ;;
esac
"""


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("apt-get", FAKE_APT_GET), ("dpkg-deb", FAKE_DPKG_DEB)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # no promtool on it
    monkeypatch.setenv("CRM_TOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    return tmp_path


def test_fetch_updates_empty_apt_lists_once_and_caches(fake_apt: Path) -> None:
    if shutil.which("promtool") is not None:
        pytest.skip("a promtool on /usr/bin or /bin is always preferred")
    path = fetcher.ensure_promtool()
    assert path == fake_apt / "cache" / "promtool-1_2.42.0+ds-5" / "promtool"
    assert subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    calls = (fake_apt / "calls.log").read_text().split("\n")
    assert calls[:3] == ["download prometheus", "update", "download prometheus"]
    assert fetcher.ensure_promtool() == path  # cached: apt-get is not asked again
    assert (fake_apt / "calls.log").read_text().count("\n") == 3
    assert [p.name for p in (fake_apt / "cache").iterdir()] in (
        ["promtool-1_2.42.0+ds-5", ".promtool.lock"],
        [".promtool.lock", "promtool-1_2.42.0+ds-5"],
    )  # the temporary folder is gone


def test_fetch_failure_says_why(fake_apt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("promtool") is not None:
        pytest.skip("a promtool on /usr/bin or /bin is always preferred")
    monkeypatch.setenv("FAKE_UPDATE_FAILS", "1")
    with pytest.raises(fetcher.PromtoolError) as failure:
        fetcher.ensure_promtool()
    message = str(failure.value)
    assert "Unable to locate package prometheus" in message
    assert "`apt-get update` failed too" in message and "no network" in message
