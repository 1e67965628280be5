"""`crm-triggers backtest`: the report agrees with `replay`, and diffs against a baseline."""

from __future__ import annotations

import io
import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from streams.backtest import ByteProgress
from streams.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "rules" / "packs"
RISK = PACKS / "risk.yaml"
VELOCITY = "agg.card_txn_10m >= 5"


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "events.jsonl"
    args = ["simulate", "--customers", "400", "--days", "20", "--seed", "5", "--out", str(path)]
    assert main(args) == 0
    return path


def _risk_copy(tmp_path: Path, name: str, *replacements: tuple[str, str]) -> Path:
    text = RISK.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _backtest(tmp_path: Path, events: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "report"
    code = main(["backtest", *args, "--events", str(events), "--report", str(report), "--quiet"])
    assert code == 0
    data: dict[str, Any] = json.loads((report / "report.json").read_text(encoding="utf-8"))
    return data


def test_report_counts_equal_what_replay_emits(
    events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    actions_file, decisions_file = tmp_path / "actions.jsonl", tmp_path / "decisions.jsonl"
    replay = ["replay", "--rules", str(PACKS), "--events", str(events), "--quiet"]
    assert main([*replay, "--actions", str(actions_file), "--decisions", str(decisions_file)]) == 0
    actions = [json.loads(line) for line in actions_file.read_text().splitlines()]
    decisions = [json.loads(line) for line in decisions_file.read_text().splitlines()]
    assert actions, "the simulated history should trigger something"

    report = _backtest(tmp_path, events, "--rules", str(PACKS), "--batch-size", "333")
    new = report["new"]
    per_rule = Counter(f"{a['pack']}/{a['rule_id']}" for a in actions)
    assert {n: r["actions"] for n, r in new["rules"].items() if r["actions"]} == per_rule
    per_day = Counter((f"{a['pack']}/{a['rule_id']}", a["ts"][:10]) for a in actions)
    assert {
        (n, day): count
        for n, r in new["rules"].items()
        for day, count in r["actions_per_day"].items()
    } == per_day
    reached: dict[str, set[str]] = {}
    for a in actions:
        reached.setdefault(f"{a['pack']}/{a['rule_id']}", set()).add(a["customer_id"])
    for name, customers in reached.items():
        assert new["rules"][name]["customers_reached"] == len(customers)
    suppressed = Counter(d["reason"] for d in decisions if d["outcome"] == "suppressed")
    assert new["suppressions_by_reason"] == dict(suppressed)
    severity = Counter(a["severity"] for a in actions if a["kind"] == "alert")
    assert new["alerts_by_severity"] == dict(severity)
    totals = new["totals"]
    assert totals["actions"] == len(actions) and totals["decisions"] == len(decisions)
    assert totals["customers_reached"] == len({a["customer_id"] for a in actions})
    assert report["run"]["events"] == len(events.read_bytes().splitlines())
    assert {p["pack"] for p in report["run"]["rules"]} == {"retail-marketing", "retail-risk"}
    assert report["baseline"] is None
    out = capsys.readouterr()
    assert "backtest:" in out.out and "report.html" in out.out
    assert not any(a["customer_id"] in out.out + out.err for a in actions)  # no ids printed


def test_identical_baseline_has_no_differences(events: Path, tmp_path: Path) -> None:
    report = _backtest(tmp_path, events, "--rules", str(PACKS), "--baseline", str(PACKS))
    assert report["diff"]["totals"] == {"added": 0, "removed": 0, "changed": 0}
    for rule in report["diff"]["rules"].values():
        assert rule["new_actions"] == rule["baseline_actions"]
    assert report["baseline"]["totals"]["actions"] == report["new"]["totals"]["actions"]


def test_a_lower_threshold_adds_actions_with_explanations(events: Path, tmp_path: Path) -> None:
    looser = _risk_copy(tmp_path, "risk.yaml", (VELOCITY, "agg.card_txn_10m >= 3"))
    report = _backtest(tmp_path, events, "--rules", str(looser), "--baseline", str(RISK))
    diff = report["diff"]["rules"]["retail-risk/card-velocity"]
    # alerts fire earlier: the 30-minute dedup then suppresses the ones the baseline raised
    assert diff["added"] > 0 and diff["changed"] == 0
    assert diff["new_actions"] - diff["baseline_actions"] == diff["added"] - diff["removed"]
    for ex in diff["examples"]["removed"]:
        assert ex["baseline"]["explanation"] and ex["new"]["outcome"] in ("no match", "suppressed")
    examples = diff["examples"]["added"]
    assert 0 < len(examples) <= 5
    for ex in examples:
        assert ex["event_id"] and ex["customer_id"] and ex["ts"]
        assert ex["new"]["outcome"] == "emitted"
        conditions = [c["condition"] for c in ex["new"]["explanation"]]
        assert "agg.card_txn_10m >= 3" in conditions
        assert ex["baseline"]["outcome"] in ("no match", "suppressed")
    others = {n: r for n, r in report["diff"]["rules"].items() if n != "retail-risk/card-velocity"}
    assert all(r["added"] == r["removed"] == r["changed"] == 0 for r in others.values())


def test_a_higher_threshold_removes_and_a_new_severity_changes(
    events: Path, tmp_path: Path
) -> None:
    stricter = _risk_copy(tmp_path, "risk.yaml", (VELOCITY, "agg.card_txn_10m >= 500"))
    report = _backtest(tmp_path, events, "--rules", str(stricter), "--baseline", str(RISK))
    diff = report["diff"]["rules"]["retail-risk/card-velocity"]
    assert diff["new_actions"] == 0 and diff["removed"] == diff["baseline_actions"] > 0
    example = diff["examples"]["removed"][0]
    assert example["baseline"]["explanation"] and example["new"] == {"outcome": "no match"}

    text = RISK.read_text(encoding="utf-8")
    start = text.index("- id: card-velocity")
    end = text.index("severity: high", start)
    relabelled = tmp_path / "relabelled.yaml"
    relabelled.write_text(text[:end] + "severity: low" + text[end + len("severity: high") :])
    report = _backtest(tmp_path, events, "--rules", str(relabelled), "--baseline", str(RISK))
    diff = report["diff"]["rules"]["retail-risk/card-velocity"]
    assert diff["changed"] == diff["baseline_actions"] > 0 and diff["added"] == 0
    example = diff["examples"]["changed"][0]
    assert (example["new"]["severity"], example["baseline"]["severity"]) == ("low", "high")


class _Strict(HTMLParser):
    """Checks that every opened element is closed in order (void elements aside)."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "rect", "line"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: Counter[str] = Counter()
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        if tag == "script":
            self.scripts += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_html_report_is_self_contained_well_formed_and_escaped(
    events: Path, tmp_path: Path
) -> None:
    hostile = "<script>alert('x')</script>"
    pack = _risk_copy(
        tmp_path,
        "hostile.yaml",
        ("description: 5 or more card", f'description: "{hostile} 5 or more card'),
        (VELOCITY, "agg.card_txn_10m >= 3"),
    )
    text = pack.read_text()
    text = text.replace(
        "5 or more card authorisations within 10 minutes.",
        '5 or more card authorisations within 10 minutes."',
        1,
    )
    pack.write_text(text)
    _backtest(tmp_path, events, "--rules", str(pack), "--baseline", str(RISK))
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    parser = _Strict()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert parser.scripts == 0 and hostile not in page
    assert html_escaped(hostile) in page
    assert parser.tags["svg"] >= 3 and parser.tags["details"] >= 1
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_bad_rules_and_missing_events_exit_2(
    events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _risk_copy(tmp_path, "broken.yaml", (VELOCITY, "agg.card_txn_10m >>= 5"))
    report = str(tmp_path / "r")
    assert (
        main(["backtest", "--rules", str(broken), "--events", str(events), "--report", report]) == 2
    )
    err = capsys.readouterr().err
    assert f"{broken}:" in err and "rules not loaded" in err
    line = err.split(f"{broken}:", 1)[1].split(":")
    assert line[0].isdigit() and line[1].isdigit()  # file:line:col
    missing = str(tmp_path / "nope.jsonl")
    args = ["backtest", "--rules", str(PACKS), "--events", missing, "--report", report]
    assert main(args) == 2
    assert "no such file" in capsys.readouterr().err
    args = ["backtest", "--rules", str(PACKS), "--baseline", str(broken), "--events", str(events)]
    assert main([*args, "--report", report]) == 2
    assert "rules not loaded" in capsys.readouterr().err
    assert not Path(report).exists()


def test_progress_without_a_tty_prints_about_every_tenth() -> None:
    out = io.StringIO()
    bar = ByteProgress(1000, out)
    for done in range(0, 1001, 25):
        bar(done, done)
    bar(1000, 1000, final=True)
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 11
    assert lines[-1].startswith("backtest: 100%") and "events/s" in lines[-1] and "ETA" in lines[-1]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_tty_is_one_redrawn_bar_at_most_four_times_a_second() -> None:
    out = _Tty()
    bar = ByteProgress(1000, out)
    for done in range(0, 1001, 10):  # a hundred updates in well under a quarter second
        bar(done, done)
    bar(1000, 1000, final=True)
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[##############################]" in text and "100%" in text
