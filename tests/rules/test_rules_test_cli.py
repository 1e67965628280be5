"""`crm-triggers rules test`: scenario files and pack-embedded tests, as an analyst runs them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from xml.etree import ElementTree

import pytest

from streams.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "rules" / "packs"
RISK = (PACKS / "risk.yaml").as_posix()

VELOCITY = f"""\
    scenario: card velocity on the fifth card payment
    packs: ["{RISK}"]
    start: "2026-11-02T10:00:00+08:00"
    customer: {{id: c1}}
    defaults: {{type: transaction, channel: card, direction: debit, amount: 120}}
    events:
      - {{at: 0m, repeat: 6, every: 1m}}
    expect:
      - {{at: 4m, rule: card-velocity, emitted: true}}
      - {{at: 5m, rule: card-velocity, suppressed: dedup}}
    """


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_passing_folder_exits_0_with_a_line_per_scenario_and_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path / "nested" / "velocity.yaml", VELOCITY)
    _write(tmp_path / "connectors.yaml", "connectors: {}\n")  # other YAML in a folder: skipped
    assert main(["rules", "test", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"PASS {good}: card velocity on the fifth card payment"
    assert out[-1].startswith("1 passed, 0 failed in ")
    assert out[-1].endswith("s")


def test_a_failing_scenario_exits_1_with_a_readable_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = VELOCITY.replace("at: 4m, rule: card-velocity", "at: 3m, rule: card-velocity")
    bad = _write(tmp_path / "wrong.yaml", wrong)
    good = _write(tmp_path / "right.yaml", VELOCITY)
    assert main(["rules", "test", str(bad), str(good)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {bad}: card velocity on the fifth card payment\n" in out
    assert f"PASS {good}: card velocity on the fifth card payment\n" in out
    assert (
        "=== failures ===\n"
        f"FAIL {bad}: card velocity on the fifth card payment\n"
        "  - expected, did not happen: at 3m card-velocity emitted\n"
        "  + happened, not expected:   at 4m card-velocity emitted\n"
        '      because: event.channel == "card" [event.channel=card];'
        " agg.card_txn_10m >= 5 [agg.card_txn_10m=5]\n"
    ) in out
    assert out.splitlines()[-1].startswith("1 passed, 1 failed in ")


def test_quiet_prints_only_failures_and_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "a.yaml", VELOCITY)
    _write(tmp_path / "b.yaml", VELOCITY.replace("suppressed: dedup", "suppressed: cooldown"))
    assert main(["rules", "test", "-q", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "PASS" not in out
    assert "  - expected, did not happen: at 5m card-velocity suppressed (cooldown)" in out
    assert "  + happened, not expected:   at 5m card-velocity suppressed (dedup)" in out
    assert out.splitlines()[-1].startswith("1 passed, 1 failed in ")


PACK = """\
    pack: tiny
    version: 1
    aggregates:
      card_10m: {on: transaction, where: 'event.channel == "card"', kind: count, window: 10m}
    rules:
      - id: velocity
        kind: alert
        on: transaction
        when: 'agg.card_10m >= 3'
        severity: high
        dedup: 30m
    tests:
      - name: fires on the third card payment
        customer: {id: c9}
        defaults: {type: transaction, channel: card, direction: debit, amount: 10}
        events: [{at: 0m, repeat: 3, every: 1m}]
        expect: [{at: 2m, rule: velocity, emitted: true}]
      - name: two payments are not enough
        defaults: {type: transaction, channel: card, direction: debit, amount: 10}
        events: [{at: 0m, repeat: 2, every: 1m}]
        expect: []
    """


def test_the_tests_embedded_in_a_pack_run_against_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = _write(tmp_path / "tiny.yaml", PACK)
    assert main(["rules", "test", str(pack)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        f"PASS {pack}: fires on the third card payment",
        f"PASS {pack}: two payments are not enough",
    ]
    assert out[-1].startswith("2 passed, 0 failed")

    _write(pack, PACK.replace("repeat: 2, every: 1m", "repeat: 4, every: 1m"))
    assert main(["rules", "test", str(pack)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {pack}: two payments are not enough" in out
    assert "  + happened, not expected:   at 2m velocity emitted" in out
    assert "  + happened, not expected:   at 3m velocity suppressed (dedup)" in out


def test_a_pack_test_with_a_wrong_key_exits_2_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = _write(
        tmp_path / "tiny.yaml",
        PACK.replace("        expect: []", "        expect: []\n        packs: [x]"),
    )
    assert main(["rules", "test", str(pack)]) == 2
    err = capsys.readouterr().err
    assert f"{pack}:22:5: error: tests[1]: unknown key `packs`" in err
    assert "        packs: [x]\n        ^" in err

    _write(pack, PACK.replace("repeat: 2, every: 1m", "repeat: 2, every: 1 minute"))
    assert main(["rules", "test", str(pack)]) == 2
    err = capsys.readouterr().err
    assert f"{pack}:20:14: error: tests[1]: events[0].every: '1 minute' is not an offset" in err


def test_a_broken_scenario_file_exits_2_with_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _write(tmp_path / "broken.yaml", VELOCITY.replace("at: 4m,", "at: 4 minutes,"))
    _write(tmp_path / "fine.yaml", VELOCITY)
    assert main(["rules", "test", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert f"{broken}:9:5: error: expect[0]: '4 minutes' is not an offset" in captured.err
    assert "  - {at: 4 minutes, rule: card-velocity, emitted: true}\n        ^" in captured.err
    assert captured.out.splitlines()[-1].startswith("1 passed, 0 failed, 1 file not usable in ")


def test_an_invalid_event_is_an_error_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path / "bad.yaml", VELOCITY.replace("amount: 120", "amount: lots"))
    assert main(["rules", "test", str(bad)]) == 2
    out = capsys.readouterr().out
    head = f"ERROR {bad}: card velocity on the fifth card payment"
    assert f"{head}\n  {bad}: event at 0 is invalid: " in out
    assert out.splitlines()[-1].startswith("0 passed, 1 failed in ")


def test_a_pack_that_does_not_load_exits_2_at_file_line_col(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = _write(tmp_path / "tiny.yaml", PACK.replace("dedup: 30m", "dedpu: 30m"))
    assert main(["rules", "test", str(pack)]) == 2
    assert (
        f"{pack}:11:5: error: unknown key `dedpu` (did you mean `dedup`?)"
        in capsys.readouterr().err
    )


def test_a_file_that_is_neither_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _write(tmp_path / "other.yaml", "hello: world\n")
    assert main(["rules", "test", str(other), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert f"{other}: error: neither a scenario (`scenario:`) nor a pack (`pack:`)" in err
    assert f"{tmp_path / 'missing'}: error: no such file or folder" in err


def test_a_yaml_error_in_a_folder_is_not_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _write(tmp_path / "s" / "broken.yaml", VELOCITY.replace("events:", "events: ["))
    assert main(["rules", "test", str(tmp_path / "s")]) == 2
    assert f"{broken}:7:3: error: invalid YAML: " in capsys.readouterr().err


def test_junit_xml_has_a_testcase_per_scenario_with_the_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "s" / "a.yaml", VELOCITY)
    _write(tmp_path / "s" / "b.yaml", VELOCITY.replace("at: 4m, rule", "at: 3m, rule"))
    report = tmp_path / "junit.xml"
    assert main(["rules", "test", "-q", "--junit-xml", str(report), str(tmp_path / "s")]) == 1
    suite = ElementTree.parse(report).getroot()
    assert (suite.tag, suite.get("tests"), suite.get("failures")) == ("testsuite", "2", "1")
    cases = suite.findall("testcase")
    assert [c.find("failure") is None for c in cases] == [True, False]
    failure = cases[1].find("failure")
    assert failure is not None and failure.text is not None
    assert "  - expected, did not happen: at 3m card-velocity emitted" in failure.text


def test_the_shipped_packs_and_scenarios_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", str(PACKS)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert f"PASS {PACKS / 'risk.yaml'}: card velocity fires on the fifth card payment" in out
    assert f"PASS {PACKS / 'marketing.yaml'}: a 6,800 card purchase" in out
    passed = int(out.splitlines()[-1].split()[0])
    assert passed >= 45 + 4  # the scenario files and the packs' own tests


def test_a_shadow_rule_is_expected_with_shadow_true_or_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    risk = (PACKS / "risk.yaml").read_text(encoding="utf-8")
    shadowed = risk.replace(
        "    severity: high\n    channel: fraud_queue\n    dedup: 30m\n",
        "    severity: high\n    channel: fraud_queue\n    dedup: 30m\n    mode: shadow\n",
        1,
    )
    assert shadowed != risk
    pack = tmp_path / "risk.yaml"
    pack.write_text(shadowed, encoding="utf-8")
    scenario = (
        VELOCITY.replace(RISK, pack.as_posix())
        .replace("emitted: true", "shadow: true")
        .replace("suppressed: dedup", "shadow: dedup")
    )
    path = _write(tmp_path / "velocity-shadow.yaml", scenario)
    assert main(["rules", "test", str(path)]) == 0, capsys.readouterr().out
    # expecting the live outcome of a shadow rule fails, and says what happened instead
    _write(path, VELOCITY.replace(RISK, pack.as_posix()))
    assert main(["rules", "test", str(path)]) == 1
    out = capsys.readouterr().out
    assert "  + happened, not expected:   at 4m card-velocity shadow" in out
