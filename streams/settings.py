"""Worker settings: from a config file, `CRM_*` environment variables and the command line.

Precedence, highest first: command-line flags, environment variables (`CRM_BROKERS`,
`CRM_TOPICS__TRANSACTIONS`, `CRM_KAFKA__SASL_PASSWORD`, ...), the config file (YAML or JSON,
`--config` or `CRM_CONFIG`), defaults. Secrets are `SecretStr`: never printed or logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectors.kafka import KafkaSecurity


class Topics(BaseModel):
    """Topic names. Inputs are keyed by customer id and must be co-partitioned."""

    model_config = ConfigDict(extra="forbid")
    transactions: str = "crm.transactions"
    interactions: str = "crm.interactions"
    profiles: str = "crm.profiles"
    offers: str = "crm.offers"
    alerts: str = "crm.alerts"
    decisions: str = "crm.decisions"
    dlq: str = "crm.dlq"
    delivery_dlq: str = "crm.delivery.dlq"  # actions a connector could not deliver

    def inputs(self) -> dict[str, str]:
        """Input topic -> the event type it carries."""
        return {
            self.transactions: "transaction",
            self.interactions: "interaction",
            self.profiles: "profile",
        }

    def outputs(self) -> list[str]:
        return [self.offers, self.alerts, self.decisions, self.dlq]


class Settings(BaseSettings):
    """Everything a worker needs to run."""

    model_config = SettingsConfigDict(env_prefix="CRM_", env_nested_delimiter="__", extra="forbid")

    brokers: str = Field("127.0.0.1:9092", description="bootstrap servers, host:port[,host:port]")
    app_id: str = Field("crm-triggers", description="consumer group and state topic prefix")
    rules: list[str] = Field(default_factory=list, description="pack files or folders")
    topics: Topics = Field(default_factory=Topics)
    partitions: int = Field(4, ge=1, description="partitions of every topic")
    replication_factor: int = Field(1, ge=1)
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    state_dir: Path = Field(Path("var/state"), description="local RocksDB state of the worker")
    batch_size: int = Field(500, ge=1, description="events taken per batch")
    batch_wait_ms: int = Field(2, ge=0, description="longest wait to fill a batch")
    max_task_idle_ms: int = Field(
        50, ge=0, description="longest wait for an empty input partition (event-time order)"
    )
    max_lag_wait_ms: int = Field(
        5000, ge=0, description="longest wait for records known to be on their way"
    )
    state_ttl_days: float = Field(730, gt=0)
    web_port: int = Field(
        6066, ge=0, description="HTTP port for /metrics, /healthz and /readyz (0: off)"
    )
    ready_stall_s: float = Field(
        60, gt=0, description="/readyz fails when there is lag and nothing processed this long"
    )
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls), file_secret_settings)

    def bootstrap(self) -> list[str]:
        return [b.strip() for b in self.brokers.split(",") if b.strip()]

    def to_env(self) -> dict[str, str]:
        """These settings as `CRM_*` environment variables (secrets included), for a child
        process: `Settings()` in that process reads back the same settings."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(mode="python").items():
            if isinstance(value, dict):
                if value.get("sasl_password_file") is not None:
                    value = {**value, "sasl_password": None}  # the child reads the file
                nested = {f"{name}__{k}": v for k, v in value.items()}
            else:
                nested = {name: value}
            for key, v in nested.items():
                if v is None:
                    continue
                if isinstance(v, SecretStr):
                    v = v.get_secret_value()
                text = json.dumps(v) if isinstance(v, list) else str(v)
                env[f"CRM_{key.upper()}"] = text
        return env

    def changelog_topic(self) -> str:
        """The state table's changelog (faust names it after the app and the table)."""
        return f"{self.app_id}-{STATE_TABLE}-changelog"


STATE_TABLE = "customer-state"


class _FileSource(PydanticBaseSettingsSource):
    """Settings from the file named by CRM_CONFIG (YAML or JSON)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("CRM_CONFIG")
        if not path:
            return {}
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"config file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {path}: expected a mapping of settings")
        kafka = data.get("kafka")
        if isinstance(kafka, dict) and "sasl_password" in kafka:
            raise ValueError(
                f"config file {path}: kafka.sasl_password does not belong in a file that may "
                "be committed; set CRM_KAFKA__SASL_PASSWORD or kafka.sasl_password_file"
            )
        return data


def load_settings(config: str | None = None, **overrides: Any) -> Settings:
    """Settings from the config file (if any), the environment and `overrides` (flags)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not config:
        return Settings(**given)
    previous = os.environ.get("CRM_CONFIG")
    os.environ["CRM_CONFIG"] = config  # read by _FileSource; restored: no side effect
    try:
        return Settings(**given)
    finally:
        if previous is None:
            del os.environ["CRM_CONFIG"]
        else:
            os.environ["CRM_CONFIG"] = previous
