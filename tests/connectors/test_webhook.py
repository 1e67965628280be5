"""Webhook delivery against a real local HTTP server: retries, Retry-After, final 4xx,
timeouts, a dead endpoint, the circuit breaker, the rate limit and the signature."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import ListSink
from connectors.webhook import (
    WebhookConfig,
    WebhookSink,
    sign,
    verify,
)
from tests.connectors.endpoint import SECRET, Endpoint, Reply, serve

FAST = {
    "timeout_s": 2.0,
    "max_attempts": 4,
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    "breaker_threshold": 100,
    "breaker_reset_s": 0.1,
}


@pytest.fixture
def endpoint_factory() -> Iterator[Any]:
    opened: list[Iterator[Endpoint]] = []

    def make(*script: Reply) -> Endpoint:
        gen = serve(list(script))
        opened.append(gen)
        return next(gen)

    yield make
    for gen in opened:
        gen.close()


@pytest.fixture(autouse=True)
def signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TEST_WEBHOOK_SECRET", SECRET)


def config(url: str, **overrides: Any) -> WebhookConfig:
    return WebhookConfig(url=url, secret_env="CRM_TEST_WEBHOOK_SECRET", **{**FAST, **overrides})


def records(n: int) -> list[bytes]:
    return [json.dumps({"action_id": f"a{i}", "customer_id": "c1"}).encode() for i in range(n)]


def run(cfg: WebhookConfig, *batches: list[bytes]) -> tuple[WebhookSink, list[dict[str, Any]]]:
    """Writes the batches through a sink, closes it, and returns it with the dead letters."""
    dead = ListSink()
    sink = WebhookSink(cfg, dead)
    for batch in batches:
        sink.write_batch(batch)
    sink.close()
    return sink, [json.loads(r) for r in dead.records]


def test_failures_then_success_delivers_each_record_once_in_order(endpoint_factory: Any) -> None:
    ep = endpoint_factory(Reply(503), Reply(500), Reply(502))
    sent = records(5)
    sink, dead = run(config(ep.url), sent[:2], sent[2:])
    assert ep.accepted == sent
    assert len(ep.received) == 3 + 5
    assert dead == []
    assert ep.bad_signatures == 0
    assert sink.delivery.delivered == 5


def test_retry_after_on_429_and_503_is_honoured(endpoint_factory: Any) -> None:
    ep = endpoint_factory(Reply(429, {"Retry-After": "1"}), Reply(503, {"Retry-After": "1"}))
    started = time.monotonic()
    _, dead = run(config(ep.url), records(1))
    assert time.monotonic() - started >= 1.8  # two waits of 1 s, backoff alone is 0.05 s
    assert ep.accepted == records(1)
    assert dead == []


def test_client_error_is_dead_lettered_at_once_and_later_records_flow(
    endpoint_factory: Any,
) -> None:
    ep = endpoint_factory(Reply(400))
    sent = records(3)
    _, dead = run(config(ep.url), sent)
    assert len(ep.received) == 3  # the 400 was not retried
    assert ep.accepted == sent[1:]
    assert dead == [
        {
            "connector": "webhook",
            "sink": "webhook",
            "url": ep.url,
            "reason": "http 400",
            "attempts": 1,
            "record": json.loads(sent[0]),
        }
    ]


def test_timeout_is_retried(endpoint_factory: Any) -> None:
    ep = endpoint_factory(Reply(200, delay_s=1.5))
    sent = records(2)
    _, dead = run(config(ep.url, timeout_s=0.5), sent)
    assert dead == []
    assert ep.received == [sent[0], *sent]  # the timed-out request was sent again
    assert ep.accepted == sent


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_dead_endpoint_dead_letters_after_max_attempts_without_credentials() -> None:
    port = unused_port()
    cfg = config(f"http://user:pa55@127.0.0.1:{port}/hook?token=t0k3n", max_attempts=3)
    sent = records(2)
    sink, dead = run(cfg, sent)
    assert [d["record"] for d in dead] == [json.loads(r) for r in sent]
    for letter in dead:
        assert letter["attempts"] == 3
        assert letter["reason"].startswith("connection error")
        assert letter["url"] == f"http://127.0.0.1:{port}/hook"
    assert "pa55" not in json.dumps(dead) and "t0k3n" not in json.dumps(dead)
    assert sink.delivery.dead_lettered == 2


def test_open_circuit_holds_records_then_probes(endpoint_factory: Any) -> None:
    ep = endpoint_factory(Reply(503), Reply(503), Reply(503))
    cfg = config(ep.url, breaker_threshold=2, breaker_reset_s=0.4, max_attempts=6)
    started = time.monotonic()
    sink, dead = run(cfg, records(2))
    assert time.monotonic() - started >= 0.7  # opened after 2 failures, again after the probe
    assert sink.delivery.breaker.times_opened == 2
    assert ep.accepted == records(2)
    assert len(ep.received) == 3 + 2
    assert dead == []


def test_rate_limit_spaces_requests(endpoint_factory: Any) -> None:
    ep = endpoint_factory()
    started = time.monotonic()
    _, dead = run(config(ep.url, rate_limit_per_s=20), records(11))
    assert time.monotonic() - started >= 0.4  # 10 waits of 1/20 s
    assert ep.accepted == records(11)
    assert dead == []


def test_server_side_verification_and_replay_rejection(endpoint_factory: Any) -> None:
    ep = endpoint_factory()
    run(config(ep.url), records(2))
    assert ep.bad_signatures == 0 and len(ep.accepted) == 2

    body = records(1)[0]
    ts = 1_700_000_000
    header = sign(SECRET, ts, body)
    assert header.startswith("v1=")
    assert verify(SECRET, str(ts), header, body, now=ts + 10)
    assert not verify(SECRET, str(ts), header, body, now=ts + 301)  # replayed later
    assert not verify(SECRET, str(ts), header, body, now=ts - 301)  # from the future
    assert not verify(SECRET, str(ts + 1), header, body, now=ts)  # timestamp swapped
    assert not verify(SECRET, str(ts), header, body + b" ", now=ts)  # body tampered
    assert not verify("other-key", str(ts), header, body, now=ts)
    assert not verify(SECRET, "yesterday", header, body, now=ts)
    assert verify(SECRET, str(ts), f"v1=00, {header}", body, now=ts)  # key rotation


def test_wrong_secret_is_rejected_by_the_receiver_and_dead_lettered(
    endpoint_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TEST_WEBHOOK_SECRET", "not-the-receivers-key")
    ep = endpoint_factory()
    _, dead = run(config(ep.url), records(1))
    assert ep.bad_signatures == 1
    assert [(d["reason"], d["attempts"]) for d in dead] == [("http 401", 1)]


def test_config_reads_secret_from_file_and_never_shows_it(tmp_path: Path) -> None:
    key_file = tmp_path / "webhook.key"
    key_file.write_text("file-key-123\n")
    cfg = WebhookConfig(url="https://crm.example/hook", secret_file=key_file)
    assert cfg.signing_secret.get_secret_value() == "file-key-123"
    assert cfg.verify_tls is True
    assert "file-key-123" not in repr(cfg) and "file-key-123" not in str(cfg.model_dump())


def test_config_rejects_missing_or_ambiguous_secret_and_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CRM_NO_SUCH_VAR is not set"):
        WebhookConfig(url="https://crm.example/hook", secret_env="CRM_NO_SUCH_VAR")
    with pytest.raises(ValidationError, match="exactly one"):
        WebhookConfig(url="https://crm.example/hook")
    with pytest.raises(ValidationError, match="exactly one"):
        WebhookConfig(
            url="https://crm.example/hook",
            secret_env="CRM_TEST_WEBHOOK_SECRET",
            secret_file=tmp_path / "k",
        )
    with pytest.raises(ValidationError, match="cannot read secret_file"):
        WebhookConfig(url="https://crm.example/hook", secret_file=tmp_path / "missing")
    with pytest.raises(ValidationError, match="http or https"):
        WebhookConfig(url="ftp://crm.example/hook", secret_env="CRM_TEST_WEBHOOK_SECRET")


def many(customers: int, per_customer: int) -> list[bytes]:
    """Interleaved actions of several customers, numbered per customer."""
    return [
        json.dumps({"action_id": f"c{c}-{n}", "customer_id": f"c{c}", "n": n}).encode()
        for n in range(per_customer)
        for c in range(customers)
    ]


def per_customer_order(bodies: list[bytes]) -> dict[str, list[int]]:
    order: dict[str, list[int]] = {}
    for body in bodies:
        record = json.loads(body)
        order.setdefault(record["customer_id"], []).append(record["n"])
    return order


def test_closed_connections_are_retried_and_every_request_carries_an_idempotency_key(
    endpoint_factory: Any,
) -> None:
    ep = endpoint_factory(Reply(close=True), Reply(close=True), Reply(500))
    sent = many(customers=1, per_customer=4)
    _, dead = run(config(ep.url), sent)
    assert dead == []
    assert ep.accepted == sent
    assert ep.idempotency_keys == [json.loads(r)["action_id"] for r in sent]


def test_an_endpoint_down_for_a_while_delays_actions_but_loses_none_and_keeps_order(
    endpoint_factory: Any,
) -> None:
    """Down longer than max_attempts of backoff: the circuit opens and the actions wait for
    the endpoint instead of becoming dead letters; then each arrives once, in order per
    customer, several customers in parallel."""
    ep = endpoint_factory()
    ep.go_down()
    cfg = config(ep.url, breaker_threshold=3, breaker_reset_s=0.2, max_attempts=3, concurrency=4)
    dead = ListSink()
    sink = WebhookSink(cfg, dead)
    sent = many(customers=6, per_customer=5)
    sink.write_batch(sent)
    deadline = time.monotonic() + 10
    while sink.delivery.breaker.times_opened < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.circuit_open or sink.delivery.breaker.times_opened >= 3
    ep.come_back()
    sink.close()
    assert dead.records == []
    assert sorted(ep.accepted) == sorted(sent)  # each exactly once
    assert per_customer_order(ep.accepted) == per_customer_order(sent)
    assert sink.retries >= 3


def test_an_outage_longer_than_max_outage_dead_letters_the_rest_without_waiting(
    endpoint_factory: Any,
) -> None:
    ep = endpoint_factory()
    ep.go_down()
    cfg = config(ep.url, breaker_threshold=2, breaker_reset_s=0.1, max_attempts=2, max_outage_s=0.3)
    started = time.monotonic()
    _, dead = run(cfg, records(50))
    assert [d["record"]["action_id"] for d in dead] == [f"a{n}" for n in range(50)]
    assert all(d["reason"].endswith("endpoint down over 0.3s") for d in dead)
    assert dead[0]["reason"].startswith("connection error") and dead[0]["attempts"] >= 2
    assert time.monotonic() - started < 3  # not 50 x the outage budget


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no authority signed (made with openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_certificates_are_verified_by_default(self_signed: tuple[Path, Path]) -> None:
    gen = serve([], tls=self_signed)
    ep = next(gen)
    try:
        _, dead = run(config(ep.url, max_attempts=1), records(1))
        assert [d["reason"] for d in dead] == ["connection error: ClientConnectorCertificateError"]
        assert ep.accepted == []
        _, dead = run(config(ep.url, verify_tls=False), records(1))  # the operator's choice
        assert dead == [] and ep.accepted == records(1)
    finally:
        gen.close()


def test_a_poison_record_is_dead_lettered_after_its_attempts_and_does_not_stall_the_rest(
    endpoint_factory: Any,
) -> None:
    """The endpoint answers one record with 500 every time: its failures open the circuit,
    but the endpoint is up (it answers), so the record is dead-lettered after max_attempts
    and the records after it are delivered, none dead-lettered untried."""
    ep = endpoint_factory()
    ep.poison = {"c0-0"}
    cfg = config(ep.url, breaker_threshold=3, breaker_reset_s=0.2, max_attempts=3, max_outage_s=0.5)
    first = many(customers=1, per_customer=1)  # c0-0, alone: nothing else resets the breaker
    later = many(customers=5, per_customer=4)[5:]  # the other customers, and c0's later ones
    started = time.monotonic()
    _, dead = run(cfg, first, later)
    assert [(d["record"]["action_id"], d["attempts"]) for d in dead] == [("c0-0", 3)]
    assert dead[0]["reason"] == "http 500"
    assert sorted(ep.accepted) == sorted(later)
    assert time.monotonic() - started < 5
