"""Creating the worker's topics with confluent-kafka's AdminClient (`crm-triggers topics create`).

The worker never creates topics itself (faust runs with `topic_allow_declare=False`): inputs,
outputs and the state changelog all need the configured partition count, and the changelog
is compacted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from monitoring.health import Check
from streams.settings import Settings


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    config: dict[str, str]


def plan(settings: Settings) -> list[TopicPlan]:
    """Every topic the worker needs, with its partitions and configuration."""
    n = settings.partitions
    plain: dict[str, str] = {}
    topics = [
        TopicPlan(t, n, plain) for t in [*settings.topics.inputs(), *settings.topics.outputs()]
    ]
    topics.append(TopicPlan(settings.changelog_topic(), n, {"cleanup.policy": "compact"}))
    topics.append(TopicPlan(settings.topics.delivery_dlq, n, plain))  # `deliver`'s
    return topics


def admin_client(settings: Settings) -> AdminClient:
    conf = {"bootstrap.servers": settings.brokers, **settings.kafka.librdkafka()}
    return AdminClient(conf)


def create_topics(settings: Settings, timeout: float = 30.0) -> dict[str, str]:
    """Create the topics that do not exist yet. Returns topic -> "created" or "exists".

    Raises RuntimeError naming the topic if one cannot be created, or if an existing topic has
    a different partition count (co-partitioning would silently break).
    """
    admin = admin_client(settings)
    wanted = plan(settings)
    existing = admin.list_topics(timeout=timeout).topics
    result: dict[str, str] = {}
    todo: list[NewTopic] = []
    for t in wanted:
        meta = existing.get(t.name)
        if meta is not None and meta.error is None:
            have = len(meta.partitions)
            if have != t.partitions:
                raise RuntimeError(
                    f"topic {t.name} has {have} partitions, the configuration says {t.partitions}"
                )
            result[t.name] = "exists"
            continue
        todo.append(
            NewTopic(
                t.name,
                num_partitions=t.partitions,
                replication_factor=settings.replication_factor,
                config=t.config,
            )
        )
    if todo:
        for name, future in admin.create_topics(todo, operation_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                result[name] = "created"
            except KafkaException as exc:
                error = exc.args[0]
                if getattr(error, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                    result[name] = "exists"
                else:
                    raise RuntimeError(f"cannot create topic {name}: {error}") from None
    return result


def wait_for_kafka(
    settings: Settings,
    say: Callable[[str], None],
    *,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    give_up_after: float | None = None,
) -> None:
    """Return once the brokers answer and every topic the worker needs exists.

    While they do not, say why (`say`) and retry with exponential backoff. Raises
    RuntimeError after `give_up_after` seconds if that is set.
    """
    admin = admin_client(settings)
    delay, started = first_delay, time.monotonic()
    while True:
        try:
            existing = admin.list_topics(timeout=5).topics
            missing = [t.name for t in plan(settings) if t.name not in existing]
            if not missing:
                return
            problem = f"topics missing: {', '.join(missing)} (run `crm-triggers topics create`)"
        except KafkaException as exc:
            problem = f"cannot reach Kafka at {settings.brokers}: {exc.args[0].str()}"
        waited = time.monotonic() - started
        if give_up_after is not None and waited >= give_up_after:
            raise RuntimeError(problem)
        say(f"{problem}; retrying in {delay:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


def check_topics(admin: AdminClient, topics: Sequence[str], what: str) -> Check:
    """The `broker` readiness check: whether Kafka answers and holds `topics` (`what` names
    them). Blocking, up to 5 s. It asks for these topics only (a bank's cluster may hold
    thousands) and never creates one."""
    missing = []
    try:
        futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=5)
        for topic, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
                missing.append(topic)
    except KafkaException as exc:
        return Check("broker", False, f"Kafka does not answer: {exc.args[0]}")
    if missing:
        return Check("broker", False, f"{what} missing: {', '.join(sorted(missing))}")
    return Check("broker", True, f"reachable, {what} there")
