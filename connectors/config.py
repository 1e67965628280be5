"""Delivery configuration: the connectors, and which actions go to which of them.

One YAML (or JSON) file, read by `crm-triggers deliver --connectors FILE`:

```yaml
connectors:
  sms-gateway:
    type: webhook
    url: https://sms.example.bank/v1/offers
    secret_env: SMS_HMAC_KEY          # or secret_file: /run/secrets/sms-hmac
    rate_limit_per_s: 200
  case-system:
    type: kafka
    topic: cases.alerts
  audit-copy:
    type: file
    path: var/delivered/actions.jsonl
    rotate_bytes: 104857600
routes:
  - match: {kind: [offer], channel: [sms, push]}
    to: [sms-gateway]
  - match: {kind: [alert], severity: [high, critical]}
    to: [case-system]
  - to: [audit-copy]                  # no match: every action
dead_letter: {type: kafka, topic: crm.delivery.dlq}   # the default
```

An action goes to every connector named by every route it matches (each connector once).
A `match` field that is absent matches anything; a list matches any of its values. An
action that matches no route is counted (`crm_delivery_unrouted_total`) and stays in its
Kafka output topic, which is the record of every action.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.kafka import KafkaSecurity
from connectors.webhook import WebhookConfig

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class StdoutConnector(BaseModel):
    """Each action as one JSON line on standard output."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["stdout"]


class FileConnector(BaseModel):
    """Actions appended to a JSON Lines file, rotated by size or age."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["file"]
    path: Path = Field(description="The live file; rotated files get a numbered suffix.")
    rotate_bytes: int | None = Field(
        100 * 1024 * 1024, ge=1024, description="Rotate before the file would grow past this."
    )
    rotate_every_s: float | None = Field(
        None, gt=0, description="Rotate a file this many seconds after it was opened."
    )
    keep: int = Field(10, ge=1, description="Rotated files kept; older ones are deleted.")
    fsync: bool = Field(
        True,
        description="fsync on every flush: a delivered action survives "
        "a power loss, not only a crash.",
    )


class KafkaConnector(BaseModel):
    """Actions produced to a Kafka topic (idempotent producer, acks=all), keyed by customer."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["kafka"]
    topic: str = Field(min_length=1)
    brokers: str | None = Field(
        None, description="Bootstrap servers; default: the worker's own (`brokers` setting)."
    )
    kafka: KafkaSecurity | None = Field(
        None, description="Connection security; default: the worker's own (`kafka` setting)."
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    delivery_timeout_s: float = Field(
        120.0, gt=0, description="How long the producer retries one batch before failing."
    )


class WebhookConnector(WebhookConfig):
    """Each action POSTed to an HTTP endpoint, signed (see connectors/webhook.py)."""

    type: Literal["webhook"]


Connector = Annotated[
    StdoutConnector | FileConnector | KafkaConnector | WebhookConnector,
    Field(discriminator="type"),
]
_TAGS = ("stdout", "file", "kafka", "webhook")
Kind = Literal["offer", "alert"]
Severity = Literal["low", "medium", "high", "critical"]


class Match(BaseModel):
    """Which actions a route takes. An absent field matches anything."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: list[Kind] | None = Field(default=None, min_length=1)
    severity: list[Severity] | None = Field(default=None, min_length=1)
    channel: list[str] | None = Field(default=None, min_length=1)
    pack: list[str] | None = Field(default=None, min_length=1)
    rule: list[str] | None = Field(default=None, min_length=1)

    def __call__(self, action: Mapping[str, Any]) -> bool:
        return (
            _any(self.kind, action.get("kind"))
            and _any(self.severity, action.get("severity"))
            and _any(self.channel, action.get("channel"))
            and _any(self.pack, action.get("pack"))
            and _any(self.rule, action.get("rule_id"))
        )


def _any(allowed: list[Any] | None, value: Any) -> bool:
    return allowed is None or value in allowed


class Route(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    match: Match = Field(default_factory=Match)
    to: list[str] = Field(min_length=1)


class DeliveryConfig(BaseModel):
    """The whole delivery file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    connectors: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Connector] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    dead_letter: Connector | None = Field(
        None,
        description="Where an action goes that a connector could not deliver; default: the "
        "Kafka topic `topics.delivery_dlq` of the worker settings (crm.delivery.dlq).",
    )
    batch_size: int = Field(
        500, ge=1, description="Actions read per batch: each connector's bound on buffered actions."
    )
    start_from: Literal["earliest", "latest"] = Field(
        "latest",
        description="Where a connector starts the first time (its consumer group has no "
        "offsets yet): `latest`, so a new or renamed connector does not send every action "
        "still in the topics' retention; `earliest` to deliver those too.",
    )
    hold_dir: Path = Field(
        Path("var/hold"),
        description="RocksDB stores of actions held for quiet hours, one per connector.",
    )

    @model_validator(mode="after")
    def _routes_name_connectors(self) -> DeliveryConfig:
        problems = []
        for n, route in enumerate(self.routes):
            for name in route.to:
                if name not in self.connectors:
                    hint = difflib.get_close_matches(name, list(self.connectors), n=1)
                    extra = f" (did you mean `{hint[0]}`?)" if hint else ""
                    problems.append(f"routes.{n}.to: unknown connector `{name}`{extra}")
        if isinstance(self.dead_letter, WebhookConnector):
            problems.append("dead_letter: a webhook cannot take dead letters (it may fail too)")
        paths: dict[Path, str] = {}
        files = [*self.connectors.items(), ("dead_letter", self.dead_letter)]
        for name, connector in files:
            if isinstance(connector, FileConnector):
                path = Path(connector.path).resolve()
                if path in paths:
                    problems.append(f"{name}: path {connector.path} is also {paths[path]}'s")
                paths.setdefault(path, name)
        unused = set(self.connectors) - {name for r in self.routes for name in r.to}
        problems += [f"connectors.{name}: no route sends anything to it" for name in sorted(unused)]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def targets(self, action: Mapping[str, Any]) -> list[str]:
        """The connectors `action` goes to, in the order they are configured."""
        chosen = {name for route in self.routes if route.match(action) for name in route.to}
        return [name for name in self.connectors if name in chosen]


class DeliveryConfigError(ValueError):
    pass


def load_delivery_config(path: str | Path) -> DeliveryConfig:
    """The delivery file at `path`; a `DeliveryConfigError` naming the file and every problem
    (with its location in the file) otherwise. Secrets are read from their environment
    variables or files now, so a missing secret fails at start, not at the first action."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeliveryConfigError(f"{path}: {exc.strerror}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise DeliveryConfigError(f"{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise DeliveryConfigError(f"{path}: expected a mapping with `connectors` and `routes`")
    try:
        return DeliveryConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            if err["loc"]:
                lines.append(_located(path, node, err))
                continue
            for problem in str(err["msg"]).removeprefix("Value error, ").splitlines():
                where, _, message = problem.partition(": ")  # "routes.0.to: unknown ..."
                loc = tuple(int(p) if p.isdigit() else p for p in where.split("."))
                lines.append(_located(path, node, {"loc": loc, "msg": message}))
        raise DeliveryConfigError("\n".join(lines)) from None


def _located(path: Path, node: yaml.Node | None, err: Mapping[str, Any]) -> str:
    """`file:line:col: field: message` for one validation error."""
    loc = list(err["loc"])
    target = node
    for part in loc:  # a part with no node (a union's tag) is skipped
        child = _child(target, part)
        if child is not None:
            target = child
    tag_at = {"connectors": 2, "dead_letter": 1}.get(str(loc[0])) if loc else None
    if tag_at is not None and len(loc) > tag_at and loc[tag_at] in _TAGS:
        del loc[tag_at]
    mark = target.start_mark if target is not None else None
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    field = ".".join(str(p) for p in loc) or "(top level)"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {field}: {message}"


def _child(node: yaml.Node | None, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return cast(yaml.Node, value)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return cast(yaml.Node, node.value[part])
    return None
