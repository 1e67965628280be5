"""The delivery file: connectors, routes, and errors located in the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors.config import DeliveryConfigError, load_delivery_config

GOOD = """\
connectors:
  sms:
    type: webhook
    url: https://sms.example/v1
    secret_env: CRM_TEST_HOOK_KEY
  cases:
    type: kafka
    topic: cases.alerts
  copy:
    type: file
    path: out/actions.jsonl
routes:
  - match: {kind: [offer], channel: [sms, push]}
    to: [sms]
  - match: {kind: [alert], severity: [high, critical]}
    to: [cases, copy]
  - match: {pack: [retail-risk], rule: [money-mule]}
    to: [cases]
  - to: [copy]
"""


@pytest.fixture(autouse=True)
def hook_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TEST_HOOK_KEY", "k")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connectors.yaml"
    path.write_text(text)
    return path


def offer(channel: str, **extra: object) -> dict[str, object]:
    return {"kind": "offer", "channel": channel, "pack": "retail-marketing", **extra}


def alert(severity: str, rule: str = "card-velocity") -> dict[str, object]:
    return {"kind": "alert", "severity": severity, "pack": "retail-risk", "rule_id": rule}


@pytest.mark.parametrize(
    ("action", "targets"),
    [
        (offer("push"), ["sms", "copy"]),
        (offer("email"), ["copy"]),
        (alert("high"), ["cases", "copy"]),
        (alert("low"), ["copy"]),
        (alert("low", rule="money-mule"), ["cases", "copy"]),  # each connector once
        (alert("critical", rule="money-mule"), ["cases", "copy"]),
    ],
)
def test_an_action_goes_to_every_connector_of_every_route_it_matches(
    tmp_path: Path, action: dict[str, object], targets: list[str]
) -> None:
    config = load_delivery_config(write(tmp_path, GOOD))
    assert config.targets(action) == targets


def test_an_action_matching_no_route_has_no_target(tmp_path: Path) -> None:
    text = GOOD.replace("  - to: [copy]\n", "  - match: {kind: [offer]}\n    to: [copy]\n")
    config = load_delivery_config(write(tmp_path, text))
    assert config.targets(alert("low")) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("to: [sms]", "to: [smss]"),
            ":14:9: routes.0.to: unknown connector `smss` (did you mean `sms`?)",
        ),
        (("type: kafka", "type: kafak"), ":7:5: connectors.cases: Input tag 'kafak'"),
        (("kind: [offer]", "kind: [ofer]"), ":13:20: routes.0.match.kind.0: Input should be"),
        (
            ("    topic: cases.alerts\n", "    topic: cases.alerts\n    acks: 1\n"),
            ":9:11: connectors.cases.acks: Extra inputs",
        ),
        (
            ("secret_env: CRM_TEST_HOOK_KEY", "secret_env: CRM_TEST_UNSET"),
            "environment variable CRM_TEST_UNSET is not set",
        ),
        (("https://sms.example/v1", "ftp://sms.example"), "url must be an http or https url"),
        (("  - to: [copy]\n", ""), None),  # still valid: copy is used by route 1
        (("to: [cases, copy]", "to: [cases]"), None),
    ],
)
def test_problems_are_reported_with_file_line_and_column(
    tmp_path: Path, change: tuple[str, str], message: str | None
) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    if message is None:
        load_delivery_config(path)
        return
    with pytest.raises(DeliveryConfigError) as err:
        load_delivery_config(path)
    assert message in str(err.value)
    assert str(err.value).startswith(str(path))


def test_a_connector_no_route_uses_is_an_error(tmp_path: Path) -> None:
    text = GOOD.replace("  - to: [copy]\n", "").replace("to: [cases, copy]", "to: [cases]")
    with pytest.raises(DeliveryConfigError, match=r"connectors\.copy: no route sends anything"):
        load_delivery_config(write(tmp_path, text))


def test_yaml_syntax_errors_have_a_location(tmp_path: Path) -> None:
    with pytest.raises(
        DeliveryConfigError, match=r"connectors.yaml:\d+:\d+: expected the node content"
    ):
        load_delivery_config(write(tmp_path, "connectors:\n  sms: [\n"))


def test_the_secret_never_shows_in_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TEST_HOOK_KEY", "s3cr3t-hmac-value")
    config = load_delivery_config(write(tmp_path, GOOD))
    sms = config.connectors["sms"]
    for text in (repr(config), str(config), config.model_dump_json()):
        assert "s3cr3t-hmac-value" not in text
    assert sms.signing_secret.get_secret_value() == "s3cr3t-hmac-value"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "dead_letter: {type: file, path: out/actions.jsonl}\n",
            "dead_letter: path out/actions.jsonl is also copy's",
        ),
        (
            "dead_letter: {type: webhook, url: 'https://x', secret_env: CRM_TEST_HOOK_KEY}\n",
            "dead_letter: a webhook cannot take dead letters",
        ),
    ],
)
def test_dead_letters_need_a_target_of_their_own_that_cannot_fail_like_a_webhook(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(DeliveryConfigError, match=re.escape(message)):
        load_delivery_config(write(tmp_path, GOOD + extra))


def test_an_empty_match_list_is_an_error_not_a_route_that_matches_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(DeliveryConfigError, match=r"routes\.0\.match\.kind: List should have"):
        load_delivery_config(write(tmp_path, GOOD.replace("kind: [offer]", "kind: []")))
