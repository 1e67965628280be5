"""The decision-quality benchmark: scoring, the cap check, and one tiny end-to-end run."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from bench.quality import (
    END,
    START,
    Fired,
    Offer,
    check_caps,
    main,
    offer_distribution,
    ratio,
    rule_codes,
    score,
)
from rules.ruleset import load_rules
from streams.simulate import Label

ROOT = Path(__file__).resolve().parents[2]


def _label(kind: str, cid: str, eid: str, ts: str) -> Label:
    return Label(kind, cid, eid, f"2026-10-01T{ts}+08:00")


def _fired(
    eid: str, cid: str, ts: str, rule: str = "card-velocity", outcome: str = "emitted"
) -> Fired:
    reason = None if outcome == "emitted" else "dedup"
    return Fired(eid, cid, "retail-risk", rule, "alert", f"2026-10-01T{ts}+08:00", outcome, reason)


def test_score_counts_tp_fp_fn_exactly() -> None:
    labels = [
        _label("R1", "c1", "e1", "10:00:00"),
        _label("R1", "c2", "e5", "11:00:00"),  # never fired: FN
        _label("R2", "c3", "e9", "12:00:00"),  # another code, on an event R1 fires on
    ]
    decisions = [
        _fired("e1", "c1", "10:00:00"),  # TP
        _fired("e2", "c1", "10:01:40", outcome="suppressed"),  # FP strict, explained relaxed
        _fired("e9", "c3", "12:00:00"),  # FP on an R2 event
        _fired("e7", "c4", "09:00:00", rule="amount-spike"),  # another rule: ignored
    ]
    r = score("R1", "card-velocity", labels, decisions, window=600)
    assert (r["labels"], r["fired"], r["emitted"]) == (2, 3, 2)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 1)
    assert r["precision"] == round(1 / 3, 4)
    assert r["recall"] == 0.5
    assert r["suppressed"] == {"dedup": 1}
    assert r["tp_suppressed"] == {}
    assert r["fp_on_label"] == {"none": 1, "R2": 1}
    x = r["relaxed"]
    assert (x["firings_explained"], x["labels_detected"], x["fp"], x["fn"]) == (2, 1, 1, 1)
    assert x["precision"] == round(2 / 3, 4)
    assert x["recall"] == 0.5


def test_score_relaxed_window_is_per_customer_and_bounded() -> None:
    labels = [_label("R1", "c1", "e1", "10:00:00")]
    late = [_fired("e2", "c1", "10:10:01")]  # 601 s after
    other = [_fired("e3", "c2", "10:00:00")]  # same time, another customer
    assert score("R1", "card-velocity", labels, late, window=600)["relaxed"]["fp"] == 1
    assert score("R1", "card-velocity", labels, late, window=601)["relaxed"]["fp"] == 0
    assert score("R1", "card-velocity", labels, other, window=600)["relaxed"]["recall"] == 0.0


def test_zero_division_is_none() -> None:
    assert ratio(0, 0) is None
    assert ratio(3, 4) == 0.75
    r = score("R6", "cash-structuring", [], [])
    assert (r["tp"], r["fp"], r["fn"], r["precision"], r["recall"]) == (0, 0, 0, None, None)
    r = score("R6", "cash-structuring", [_label("R6", "c1", "e1", "10:00:00")], [])
    assert (r["precision"], r["recall"], r["fn"]) == (None, 0.0, 1)
    assert r["relaxed"]["precision"] is None


def _offer(cid: str, hours: float, pack: str = "retail-marketing") -> Offer:
    return Offer(cid, hours * 3600, date(2026, 10, 1) + timedelta(days=hours // 24), pack)


def test_cap_check_follows_the_policy_windows() -> None:
    caps = {"retail-marketing": (1, 3)}
    ok = [_offer("c1", 0), _offer("c1", 24), _offer("c1", 48), _offer("c1", 168), _offer("c2", 1)]
    r = check_caps(ok, caps)
    assert r["violations"] == []
    assert (r["max_rolling_24h"], r["max_rolling_7d"]) == (1, 3)

    two_a_day = check_caps([_offer("c1", 0), _offer("c1", 23.9)], caps)
    assert [(v["cap"], v["offers_before"]) for v in two_a_day["violations"]] == [("day", 1)]
    assert two_a_day["max_rolling_24h"] == 2

    four_a_week = [_offer("c1", h) for h in (0, 30, 60, 90)]
    assert [v["cap"] for v in check_caps(four_a_week, caps)["violations"]] == ["week"]
    # a pack without caps is never over them
    assert check_caps(four_a_week, {"retail-marketing": (None, None)})["violations"] == []


def test_offer_distribution_counts_every_customer_week() -> None:
    offers = [_offer("c1", 0), _offer("c1", 30), _offer("c2", 30), _offer("c1", -48)]
    d = offer_distribution(offers, ["c1", "c2", "c3"], date(2026, 10, 1), date(2026, 10, 7))
    assert d["iso_weeks"] == ["2026-W40", "2026-W41"]  # Thu 1 Oct to Wed 7 Oct
    assert d["customer_weeks"] == 6
    assert d["offers_in_period"] == 3 and d["offers_outside_period"] == 1
    assert d["max_per_customer_week"] == 2 and d["max_per_customer_day"] == 1
    assert d["weeks_by_offers"] == {"0": 4, "1": 1, "2": 1}
    assert d["mean_per_customer_week"] == 0.5


def test_every_catalogue_code_maps_to_a_shipped_rule() -> None:
    codes = rule_codes(load_rules([ROOT / "rules" / "packs"]))
    assert set(codes) == {"R1", "R2", "R3", "R4", "R5", "R6", "R9"} | {
        "M1", "M2", "M3", "M4", "M7", "M8"
    }  # fmt: skip
    assert codes["R5"] == ("retail-risk", "dormant-reactivation", "alert")
    assert codes["M8"][2] == "offer"


def test_whole_benchmark_on_a_tiny_stream(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nkept\n", encoding="utf-8")
    out = tmp_path / "quality.json"
    argv = ["--customers", "200", "--days", "7", "--seed", "1", "--data", str(tmp_path)]
    assert main([*argv, "--json", str(out), "--markdown", str(doc)]) == 0
    res = json.loads(out.read_text(encoding="utf-8"))
    q = res["quality"]
    assert q["events"] > 1000 and q["decisions"] > 0
    rows = q["risk"] + q["marketing"]
    assert len(q["risk"]) == 7 and len(q["marketing"]) == 6
    assert any(r["recall"] for r in rows)
    for r in rows:
        assert r["tp"] + r["fp"] == r["fired"] and r["tp"] + r["fn"] == r["labels"]
        assert r["relaxed"]["fp"] <= r["fp"]
    assert q["offers"]["violations"] == []
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nkept\n") and START in text and END in text
    # a second run replaces the section instead of appending another
    assert main([*argv, "--json", str(out), "--markdown", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8").count(START) == 1
