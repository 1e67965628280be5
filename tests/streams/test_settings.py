"""Worker settings: environment variables, a settings file, and handing them to a child."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import KafkaSecurity, Settings, Topics, load_settings


def test_settings_survive_the_trip_through_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Settings(
        brokers="k1:9092,k2:9092",
        rules=["rules/packs", "extra.yaml"],
        topics=Topics(transactions="bank.txns"),
        batch_size=7,
        state_dir=Path("/tmp/state"),
        kafka=KafkaSecurity(security_protocol="SASL_SSL", sasl_username="u", sasl_password="pw"),
    )
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original
    assert Settings().kafka.sasl_password.get_secret_value() == "pw"  # type: ignore[union-attr]


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "crm.yaml"
    config.write_text("brokers: file:1\npartitions: 8\napp_id: from-file\n")
    monkeypatch.setenv("CRM_PARTITIONS", "6")
    s = load_settings(str(config), brokers="flag:1")
    assert (s.brokers, s.partitions, s.app_id) == ("flag:1", 6, "from-file")


def test_loading_a_settings_file_leaves_the_environment_alone(tmp_path: Path) -> None:
    config = tmp_path / "crm.yaml"
    config.write_text("partitions: 8\n")
    assert load_settings(str(config)).partitions == 8
    assert Settings().partitions == 4


def test_the_sasl_password_comes_from_the_environment_or_a_secrets_file_never_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "crm.yaml"
    config.write_text("kafka: {sasl_username: u, sasl_password: hunter2}\n")
    with pytest.raises(ValueError, match=r"kafka\.sasl_password does not belong"):
        load_settings(str(config))
    secret = tmp_path / "kafka-password"
    secret.write_text("hunter2\n")
    config.write_text(f"kafka: {{sasl_username: u, sasl_password_file: {secret}}}\n")
    s = load_settings(str(config))
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"
    assert s.kafka.librdkafka()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    for key, value in s.to_env().items():  # a child process reads the file itself
        monkeypatch.setenv(key, value)
    assert Settings() == s
