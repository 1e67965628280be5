"""The `crm-triggers` command: replay, rules check, simulate and demo, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streams.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "rules" / "packs"
CLI = [sys.executable, "-m", "streams.cli"]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "events.jsonl"
    assert (
        main(["simulate", "--customers", "300", "--days", "20", "--seed", "3", "--out", str(path)])
        == 0
    )
    return path


def test_replay_writes_actions_to_stdout_and_is_deterministic(events: Path) -> None:
    first = run("replay", "--rules", str(PACKS), "--events", str(events))
    second = run("replay", "--rules", str(PACKS), "--events", str(events), "--batch-size", "7")
    assert first.returncode == 0, first.stderr.decode()
    actions = [json.loads(line) for line in first.stdout.splitlines()]
    assert actions, "the simulated stream should trigger something"
    assert first.stdout == second.stdout
    assert {a["kind"] for a in actions} == {"offer", "alert"}
    assert b"events" in first.stderr and b"actions" in first.stderr  # the summary line


def test_replay_with_dead_letters_exits_zero_and_writes_every_output(
    events: Path, tmp_path: Path
) -> None:
    mixed = tmp_path / "mixed.jsonl"
    lines = events.read_bytes().splitlines()[:2000]
    mixed.write_bytes(b"\n".join([lines[0], b"{broken", *lines[1:], b'{"type": "x"}']) + b"\n")
    out = {name: tmp_path / f"{name}.jsonl" for name in ("actions", "decisions", "dead")}
    result = run(
        "replay",
        "--rules",
        str(PACKS),
        "--events",
        str(mixed),
        "--actions",
        str(out["actions"]),
        "--decisions",
        str(out["decisions"]),
        "--dead-letter",
        str(out["dead"]),
        "--state",
        str(tmp_path / "state"),
    )
    assert result.returncode == 0, result.stderr.decode()
    dead = [json.loads(line) for line in out["dead"].read_text().splitlines()]
    assert [(d["origin"], d["reason"]) for d in dead] == [
        (f"{mixed}:2", "malformed_json"),
        (f"{mixed}:{len(lines) + 2}", "invalid_event"),
    ]
    decisions = [json.loads(line) for line in out["decisions"].read_text().splitlines()]
    emitted = [d["action_id"] for d in decisions if d["outcome"] == "emitted"]
    actions = [json.loads(line)["action_id"] for line in out["actions"].read_text().splitlines()]
    assert emitted == actions
    assert "2 dead letters" in result.stderr.decode()


def test_replay_reads_stdin(events: Path) -> None:
    head = b"\n".join(events.read_bytes().splitlines()[:500]) + b"\n"
    result = run("replay", "--rules", str(PACKS), "--events", "-", "--quiet", stdin=head)
    assert result.returncode == 0 and result.stderr == b""


def test_replay_rejects_bad_rules_with_position_and_exit_2(events: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "pack: p\nversion: 1\nrules:\n  - id: r\n    kind: alert\n    on: transaction\n"
        "    severity: low\n    when: 'event.amout > 5'\n"
    )
    result = run("replay", "--rules", str(bad), "--events", str(events))
    assert result.returncode == 2
    err = result.stderr.decode()
    assert f"{bad}:8:12: error: unknown field `event.amout`" in err
    assert "did you mean `event.amount`?" in err
    assert result.stdout == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "/nonexistent.jsonl"], "no such file"),
        (["--events", "x", "--rules", "/nonexistent"], "no such file or folder"),
        (["--events", "x", "--state-ttl", "soon"], "not a duration"),
    ],
)
def test_replay_usage_errors_exit_2(args: list[str], message: str) -> None:
    if "--rules" not in args:
        args = ["--rules", str(PACKS), *args]
    result = run("replay", *args)
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_rules_check(tmp_path: Path) -> None:
    good = run("rules", "check", str(PACKS))
    assert good.returncode == 0
    assert b"ok: retail-risk v1" in good.stdout and b"ok: retail-marketing v1" in good.stdout
    (tmp_path / "a.yaml").write_text("pack: a\nversion: 1\nrules: []\n")
    (tmp_path / "b.yaml").write_text("pack: b\nversion: x\nrules: [1]\n")
    bad = run("rules", "check", str(tmp_path))
    assert bad.returncode == 1
    err = bad.stderr.decode()
    assert f"{tmp_path / 'a.yaml'}:3:8: error: rules" in err
    assert f"{tmp_path / 'b.yaml'}:2:10: error: version" in err
    assert "3 problems found" in err


def test_simulate_is_deterministic_by_seed(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    for path, seed in ((a, "5"), (b, "5"), (c, "6")):
        assert (
            main(
                ["simulate", "--customers", "50", "--days", "3", "--seed", seed, "--out", str(path)]
            )
            == 0
        )
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_demo_runs_shows_actions_and_serves_metrics(tmp_path: Path) -> None:
    port = 19000 + (int(time.time()) % 500)
    proc = subprocess.Popen(
        [
            *CLI,
            "demo",
            "--customers",
            "300",
            "--days",
            "12",
            "--rate",
            "4000",
            "--metrics-port",
            str(port),
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    metrics, health = "", {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                metrics = r.read().decode()
            if "crm_events_total{" in metrics:
                for path in ("healthz", "readyz"):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}") as r:
                        health[path] = (r.status, json.loads(r.read()))
                break
        except OSError:
            pass
        time.sleep(0.2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert 'crm_events_total{outcome="processed",topic="simulate",type="transaction"}' in metrics
    assert 'crm_event_processing_seconds_bucket{le="+Inf",type="transaction"}' in metrics
    assert "process_resident_memory_bytes" in metrics and "crm_ready 1.0" in metrics
    assert health["healthz"][0] == 200 and health["healthz"][1]["alive"] is True
    assert health["readyz"][0] == 200 and health["readyz"][1]["ready"] is True
    text = out.decode()
    assert "demo finished" in text and "retail-risk / card-velocity" in text
    assert (tmp_path / "actions.jsonl").read_text().strip()


def test_replay_with_state_removes_customers_idle_past_the_ttl(tmp_path: Path) -> None:
    def txn(i: int, customer: str, ts: str) -> str:
        return json.dumps(
            {
                "type": "transaction",
                "event_id": f"e{i}",
                "customer_id": customer,
                "ts": ts,
                "amount": 5,
                "direction": "debit",
                "channel": "card",
            }
        )

    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                txn(1, "sleeper", "2026-01-01T10:00:00+08:00"),
                txn(2, "active", "2026-11-01T10:00:00+08:00"),
            ]
        )
        + "\n"
    )
    state = tmp_path / "state"
    result = run(
        "replay",
        "--rules",
        str(PACKS),
        "--events",
        str(events),
        "--state",
        str(state),
        "--state-ttl",
        "90d",
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "removed 1 customers idle for over 90d" in result.stderr.decode()
    from state.store import RocksStore

    store = RocksStore(state)
    try:
        assert store.get("sleeper") is None and store.get("active") is not None
    finally:
        store.close()
