"""The combined benchmark report (bench/report.py) on small fixture results: no broker, no runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.report import END, START, build, load_sources, main, markdown, write_summary

MACHINE = {"cpu_model": "Test CPU", "cores": 2, "memory_gb": 8.0, "python": "CPython 3.11.7"}


def _run(command: str, commit: str = "abc1234", days: int | None = 7, **extra: Any) -> dict:
    run: dict[str, Any] = {
        "date": "2026-11-25T10:00:00+00:00",
        "command": command,
        "machine": {**MACHINE, "git": commit},
        **extra,
    }
    if days is not None:
        run["stream"] = {"customers": 10_000, "days": days, "seed": 1}
    return run


def _phases(p99_at_5k: float, scale: float = 1.0) -> list[dict[str, Any]]:
    return [
        {"rate": 1000, "p50_ms": 10 * scale, "p99_ms": 20 * scale, "p999_ms": 30 * scale},
        {"rate": 5000, "p50_ms": 12 * scale, "p99_ms": p99_at_5k, "p999_ms": 40 * scale},
        {"rate": 10000, "p50_ms": 50 * scale, "p99_ms": 90 * scale, "p999_ms": 99 * scale},
    ]


def sources(**overrides: Any) -> dict[str, dict[str, Any] | None]:
    src: dict[str, dict[str, Any] | None] = {
        "replay": _run(
            "python -m bench.replay_throughput",
            days=30,
            engine_memory={"events_per_s": 120_000},
            engine_rocksdb={"events_per_s": 90_000},
        ),
        "scale": _run(
            "python -m bench.scale",
            days=None,
            core=[{"customers": 1_000_000, "days": 3, "events_per_s": 80_000}],
            memory=[
                {
                    "customers": 100_000,
                    "worker_rss_mb": 300.0,
                    "worker_peak_rss_mb": 350.0,
                    "rocksdb_bytes": 1.5e8,
                    "rocksdb_bytes_per_customer": 1500,
                },
                {
                    "customers": 1_000_000,
                    "worker_rss_mb": 900.0,
                    "worker_peak_rss_mb": 950.0,
                    "rocksdb_bytes_per_customer": 1400,
                },
            ],
            restore=[{"customers": 1_000_000, "changelog_records": 10, "seconds": 42.0}],
        ),
        "worker": _run(
            "python -m bench.worker_throughput",
            worker={"events_per_s": 12_000, "other_work_seen": []},
            ceiling={"events_per_s": 80_000},
            parity={"match": True},
        ),
        "naive": _run(
            "python -m bench.naive_faust", naive={"events_per_s": 2_000, "other_work_seen": []}
        ),
        "latency": _run("python -m bench.worker_latency --app worker", phases=_phases(20.0)),
        "latency_naive": _run(
            "python -m bench.worker_latency --app naive", phases=_phases(400.0, scale=4)
        ),
        "quality": _run(
            "python -m bench.quality",
            days=30,
            quality={
                "risk": [{"fired": 10, "labels": 8, "tp": 8, "relaxed": {"firings_explained": 9}}],
                "marketing": [{"fired": 4, "labels": 5, "tp": 4}],
            },
            offers_summary={"violations": 0},
        ),
        "outage": _run(
            "python -m bench.webhook_outage",
            days=None,
            config={"outage_s": 600.0},
            backlog_at_end_of_outage={"webhook_lag": 120_000},
            rss_kb={"outage": {"max": 90_000}, "warmup_last_20s": {"median": 84_880}},
            catchup={"seconds": 60.0, "rate_per_s": 5000.0},
            checks={"webhook_missing": 0, "file_missing": 0, "dead_letters": 1},
        ),
    }
    src.update(overrides)
    return src


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in report["rows"]}


def test_the_webhook_outage_rows() -> None:
    r = rows(build(sources()))
    assert r["outage.backlog"]["value"] == 120_000
    assert r["outage.rss_growth"]["value"] == 5.0  # MiB
    assert r["outage.catchup_s"]["value"] == 60.0
    assert r["outage.catchup_rate"]["value"] == 5000.0
    assert "10-minute" in r["outage.catchup_s"]["figure"]
    assert (r["outage.lost"]["value"], r["outage.lost"]["met"]) == (1, False)
    assert rows(build(sources(outage=None)))["outage.lost"]["value"] is None


def test_ratios_to_the_baseline_and_the_ceiling() -> None:
    r = rows(build(sources()))
    worker = r["worker.events_per_s"]
    assert worker["ratio_baseline"] == pytest.approx(6.0)
    assert worker["ratio_ceiling"] == pytest.approx(0.15)
    assert r["naive.events_per_s"]["ratio_baseline"] == pytest.approx(1.0)
    assert r["ceiling.events_per_s"]["ratio_baseline"] == pytest.approx(40.0)
    assert r["embedded.memory.c10000"]["ratio_baseline"] == pytest.approx(60.0)
    # a latency against the naive app's at the same rate and percentile
    assert r["worker.latency.p99.r5000"]["ratio_baseline"] == pytest.approx(0.05)
    assert r["worker.latency.p50.r1000"]["ratio_baseline"] == pytest.approx(0.25)
    assert r["worker.latency.p99.r5000"]["ratio_ceiling"] is None
    # no ratios for memory, recovery, quality
    assert r["memory.worker_rss_mb.c100000"]["ratio_baseline"] is None
    assert r["restore.seconds.c1000000"]["value"] == 42.0
    assert r["quality.risk.precision"]["value"] == 80.0
    assert r["quality.risk.precision_relaxed"]["value"] == 90.0
    assert r["quality.marketing.recall"]["value"] == 80.0


def test_targets_met_and_not_met() -> None:
    report = build(sources())
    r = rows(report)
    assert r["embedded.memory.c10000"]["met"] is True  # 120,000 >= 100,000
    assert r["embedded.rocksdb.c10000"]["met"] is False
    assert r["embedded.scale.c1000000"]["met"] is False
    assert r["worker.events_per_s"]["met"] is True  # 6x >= 5x
    assert r["worker.latency.p99.r5000"]["met"] is True  # 20 ms < 25 ms
    assert r["worker.latency.p99.r1000"]["met"] is None  # no target there
    assert r["quality.offer_cap_breaches"]["met"] is True
    assert report["targets"]["of"] == 8  # the outage: no action lost

    slow = sources(
        worker=_run("w", worker={"events_per_s": 9_000}, ceiling={"events_per_s": 1}),
        latency=_run("l", phases=_phases(30.0)),
    )
    r = rows(build(slow))
    assert r["worker.events_per_s"]["met"] is False  # 4.5x < 5x
    assert r["worker.latency.p99.r5000"]["met"] is False
    text = markdown(build(slow))
    assert "**not met**" in text and "| **no** |" in text


def test_missing_inputs_give_placeholder_rows() -> None:
    report = build(sources(scale=None, latency_naive=None))
    r = rows(report)
    assert "bench/results/scale.json" in report["missing"]
    for key in (
        "embedded.scale.c1000000",
        "memory.worker_rss_mb.c100000",
        "memory.rocksdb_bytes_per_customer.c1000000",
        "restore.seconds.c1000000",
    ):
        assert r[key]["value"] is None
        assert r[key]["met"] is None
        assert r[key]["flags"] == ["missing: bench/results/scale.json"]
    assert r["worker.latency.p99.r5000"]["ratio_baseline"] is None
    assert "missing: bench/results/scale.json" in markdown(report)

    nothing = build(dict.fromkeys(sources()))
    assert all(row["value"] is None for row in nothing["rows"])
    assert nothing["machine"] is None and nothing["commits"] == []
    assert "n/a" in markdown(nothing)


def test_required_sizes_missing_from_scale_json_show_as_n_a() -> None:
    scale = sources()["scale"]
    assert scale is not None
    scale["memory"] = scale["memory"][:1]
    scale["memory"][0]["other_work_seen"] = ["pytest"]
    r = rows(build(sources(scale=scale)))
    assert r["memory.worker_rss_mb.c100000"]["value"] == 300.0
    assert r["memory.worker_rss_mb.c1000000"]["value"] is None
    assert r["memory.worker_rss_mb.c1000000"]["flags"][0] == "not in bench/results/scale.json"
    assert r["memory.worker_rss_mb.c1000000"]["command"] is None
    assert "other work ran during the run (1 processes)" in r["restore.seconds.c1000000"]["flags"]
    replay = sources()["replay"]
    assert replay is not None
    replay["warnings"] = ["RocksDB actions 1 != in-memory 2"]
    r = rows(build(sources(replay=replay)))
    assert "the run reported 1 problems" in r["embedded.memory.c10000"]["flags"]


def test_rows_from_different_commits_machines_or_streams_are_flagged() -> None:
    assert all(
        not row["flags"] or "streams differ" in row["flags"][0] for row in build(sources())["rows"]
    )
    other = sources(naive=_run("n", commit="def5678", naive={"events_per_s": 2_000}))
    other["naive"]["machine"]["cores"] = 8  # type: ignore[index]
    r = rows(build(other))
    flags = " ".join(r["worker.events_per_s"]["flags"])
    assert "commits differ: worker abc1234, naive def5678" in flags
    assert "machines differ" in flags
    assert not r["quality.risk.recall"]["flags"]  # one run, no ratio
    # the embedded core's 30-day stream against the 7-day Kafka streams
    assert any("streams differ" in f for f in r["embedded.memory.c10000"]["flags"])


def test_since_flags_runs_from_before() -> None:
    r = rows(build(sources(), since="2026-11-25T11:00:00Z"))
    assert any(f.startswith("not from this run") for f in r["worker.events_per_s"]["flags"])
    r = rows(build(sources(), since="2026-11-25T09:00:00Z"))
    assert not any(f.startswith("not from this run") for f in r["worker.events_per_s"]["flags"])


def test_write_summary_after_the_intro_then_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(
        "# Benchmarks\n\nIntro line one\nline two.\n\n<!-- a:start -->\nA\n<!-- a:end -->\n"
    )
    write_summary("first", doc)
    text = doc.read_text()
    assert text.startswith(
        f"# Benchmarks\n\nIntro line one\nline two.\n\n{START}\nfirst\n{END}\n\n"
    )
    assert text.endswith("<!-- a:start -->\nA\n<!-- a:end -->\n")
    write_summary("second", doc)
    assert doc.read_text() == text.replace("first", "second")


def test_main_writes_latest_json_and_the_summary(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    names = {"replay": "replay.json", "worker": "worker.json", "naive": "naive.json"}
    src = sources()
    for key, name in names.items():
        (results / name).write_text(json.dumps(src[key]))
    (results / "quality.json").write_text("{not json")
    assert set(k for k, v in load_sources(results).items() if v) == set(names)
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nIntro.\n")
    assert main(["--results", str(results), "--benchmarks", str(doc)]) == 0
    latest = json.loads((results / "latest.json").read_text())
    assert latest["machine"]["cores"] == 2
    assert latest["commits"] == ["abc1234"]
    assert "bench/results/quality.json" in latest["missing"]
    assert rows(latest)["worker.events_per_s"]["ratio_baseline"] == 6.0
    assert START in doc.read_text() and "Machine: Test CPU, 2 cores, 8.0 GB RAM" in doc.read_text()
