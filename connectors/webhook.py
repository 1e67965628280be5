"""Webhook sink: each record is POSTed to one HTTP endpoint, signed, retried, and
dead-lettered when it cannot be delivered.

What a caller may rely on:
- Records of one customer (their `customer_id`) are delivered one at a time, in the order
  written; up to `concurrency` customers' records are in flight at once. Delivery is at
  least once: a request that times out may have reached the receiver and is sent again;
  every request carries the record's `action_id` as `Idempotency-Key`, so the receiver can
  drop a second copy.
- Connection errors, timeouts, 5xx and 429 are retried with exponential backoff and full
  jitter; `Retry-After` (seconds or an HTTP date) is honoured on 429 and 503. Any other
  non-2xx status is final at once.
- After `max_attempts`, or on a final status, the record goes to the dead-letter sink as
  JSON with the original record, the reason, the attempt count and the url without
  credentials or query string. A record is never dropped silently.
- After `breaker_threshold` consecutive failures the endpoint's circuit opens for
  `breaker_reset_s`; records wait instead of hammering it. When the failures say the
  endpoint is unreachable (connection refused or timed out, 502/503/504) and the circuit is
  open, the endpoint is down, and a record that has used its attempts waits for it instead
  of being dead-lettered: an outage delays actions, it does not turn them into dead letters.
  A record the endpoint answers with 500 or a read timeout every time (a poison record) is
  dead-lettered after `max_attempts`. Once the endpoint has been down for `max_outage_s`,
  records go to the dead-letter sink without waiting until it answers again (any HTTP
  response ends the outage).
- Every request carries `X-CRM-Timestamp` (unix seconds) and
  `X-CRM-Signature: v1=<hex HMAC-SHA256 of "<timestamp>." + body>`; receivers check it
  with `verify`, which also rejects stale timestamps (replays).

`WebhookDelivery` is the async core for code already running in an event loop;
`WebhookSink` is the synchronous `Sink` that runs it on a private event-loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from connectors.base import Sink, dead_letter
from connectors.secrets import secret_from_file

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-CRM-Timestamp"
SIGNATURE_HEADER = "X-CRM-Signature"
SIGNATURE_VERSION = "v1"


class WebhookConfig(BaseModel):
    """One webhook endpoint and how deliveries to it behave.

    The signing secret is read from exactly one of `secret_env` (the name of an
    environment variable) or `secret_file` (a file whose content, stripped, is the key)
    when the config is loaded; it is held as a `SecretStr` and never appears in reprs,
    logs or dead letters.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(
        repr=False,
        description="Endpoint that receives one POST per action; http or https. "
        "Credentials in the url are sent as basic auth and never written to dead letters.",
    )
    timeout_s: float = Field(10.0, gt=0, description="Total time allowed for one request.")
    max_attempts: int = Field(5, ge=1, description="Attempts per record, the first included.")
    backoff_base_s: float = Field(0.5, gt=0, description="Backoff before the second attempt.")
    backoff_max_s: float = Field(30.0, gt=0, description="Upper bound of any backoff.")
    jitter: bool = Field(
        True, description="Full jitter: each wait is uniform in [0, backoff] instead of backoff."
    )
    retry_after_max_s: float = Field(
        300.0, ge=0, description="Longest `Retry-After` honoured; longer values are capped."
    )
    rate_limit_per_s: float | None = Field(
        None, gt=0, description="Most requests per second to this endpoint; None for no limit."
    )
    rate_limit_burst: int = Field(1, ge=1, description="Requests allowed back to back.")
    breaker_threshold: int = Field(
        5, ge=1, description="Consecutive failed attempts that open the circuit."
    )
    breaker_reset_s: float = Field(
        30.0, gt=0, description="How long an open circuit holds records before a probe."
    )
    secret_env: str | None = Field(
        None, description="Environment variable holding the HMAC signing secret."
    )
    secret_file: Path | None = Field(None, description="File holding the HMAC signing secret.")
    verify_tls: bool = Field(True, description="Verify the endpoint's TLS certificate.")
    concurrency: int = Field(
        8, ge=1, le=256, description="Customers whose records may be in flight at once."
    )
    max_outage_s: float = Field(
        3600.0,
        ge=0,
        description="After the endpoint has been down (circuit open) this long, records go "
        "to the dead-letter sink without waiting, until it answers again.",
    )

    _secret: SecretStr = PrivateAttr()

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http or https url with a host")
        return url

    @model_validator(mode="after")
    def _load_secret(self) -> Self:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret_env or secret_file")
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env, "")
            if not value:
                raise ValueError(f"environment variable {self.secret_env} is not set or empty")
            self._secret = SecretStr(value)
        else:
            assert self.secret_file is not None
            self._secret = secret_from_file(self.secret_file, "secret_file")
        return self

    @property
    def signing_secret(self) -> SecretStr:
        return self._secret

    @property
    def safe_url(self) -> str:
        """The url without credentials, query string or fragment: safe to log."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _key(secret: str | bytes | SecretStr) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes | SecretStr, timestamp: int, body: bytes) -> str:
    """The `X-CRM-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(
    secret: str | bytes | SecretStr,
    header_timestamp: str,
    header_signature: str,
    body: bytes,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """True when the headers were made with `secret` for exactly `body` and the timestamp
    is within `tolerance` seconds of `now`; False for anything else (malformed headers,
    a tampered body, another key, or a stale timestamp, i.e. a replay).

    The signature header may list several comma-separated `v1=` values (key rotation).
    """
    try:
        timestamp = int(header_timestamp)
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    candidates = [part.strip() for part in header_signature.split(",")]
    # Compare against every candidate so the time taken does not reveal which matched.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    return any(matches)


class CircuitBreaker:
    """Opens after `threshold` consecutive failures and stays open for `reset_s`; after
    that one attempt is let through, and its failure opens the circuit again."""

    def __init__(
        self, threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self.times_opened = 0

    def wait_s(self) -> float:
        """Seconds until an attempt may be made (0 when the circuit is closed)."""
        return max(0.0, self._open_until - self._clock())

    def record_success(self) -> None:
        self._failures = 0

    def record_failure(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._reset_s
            self.times_opened += 1


class TokenBucket:
    """Allows `rate` requests per second on average and `burst` back to back."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self) -> float:
        """Takes one token and returns how long to wait before using it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        return max(0.0, -self._tokens / self._rate)


@dataclass(frozen=True)
class _Outcome:
    delivered: bool
    retryable: bool
    reason: str
    retry_after_s: float | None = None
    # the endpoint is unreachable (connection refused or timed out, 502/503/504): not about
    # this record, so a record waits for it rather than using up its attempts
    unavailable: bool = False
    answered: bool = False  # the endpoint sent an HTTP response: it is up


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookDelivery:
    """The async core: `await deliver(records)` returns when every record is delivered or
    dead-lettered. Calls are serialised, so records keep their order across calls.
    Use it from one event loop; `aclose()` releases the HTTP session."""

    def __init__(
        self,
        config: WebhookConfig,
        dead_letter: Sink,
        *,
        rng: random.Random | None = None,
        name: str = "webhook",
    ) -> None:
        self.name = name
        self._config = config
        self._dead_letter = dead_letter
        self._rng = rng or random.Random()
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_reset_s)
        self._bucket = (
            TokenBucket(config.rate_limit_per_s, config.rate_limit_burst)
            if config.rate_limit_per_s is not None
            else None
        )
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.dead_lettered = 0
        self.retries = 0
        self._down_since: float | None = None  # the circuit first opened (since a success)

    @property
    def circuit_open(self) -> bool:
        return self.breaker.wait_s() > 0

    async def deliver(self, records: Sequence[bytes]) -> None:
        async with self._lock:
            lanes: dict[str | None, list[tuple[bytes, dict[str, str]]]] = {}
            for record in records:  # each record parsed once: its lane and its headers
                customer, headers = _ids_of(record)
                lanes.setdefault(customer, []).append((record, headers))
            limit = asyncio.Semaphore(self._config.concurrency)

            async def run(lane: list[tuple[bytes, dict[str, str]]]) -> None:
                async with limit:
                    for record, headers in lane:
                        await self._deliver_one(record, headers)

            await asyncio.gather(*(run(lane) for lane in lanes.values()))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _backoff_s(self, attempt: int) -> float:
        cfg = self._config
        ceiling = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling) if cfg.jitter else ceiling

    async def _deliver_one(self, record: bytes, headers: dict[str, str]) -> None:
        cfg = self._config
        outcome = _Outcome(False, True, "not attempted")
        attempts = 0
        while True:
            while (wait := self.breaker.wait_s()) > 0:
                if self._down_s() + wait > cfg.max_outage_s:  # down too long: stop waiting
                    down = f"endpoint down over {cfg.max_outage_s:g}s"
                    reason = f"{outcome.reason}; {down}" if attempts else down
                    self._send_to_dead_letter(record, reason, attempts)
                    return
                await asyncio.sleep(wait)
            if self._bucket is not None and (wait := self._bucket.reserve()) > 0:
                await asyncio.sleep(wait)
            attempts += 1
            outcome = await self._attempt(record, headers)
            if outcome.answered:  # whatever it said, the endpoint is up
                self._down_since = None
            if outcome.delivered:
                self.breaker.record_success()
                self.delivered += 1
                return
            if not outcome.retryable:
                self.breaker.record_success()  # a final answer about this record
                break
            self.breaker.record_failure()
            self.retries += 1
            if outcome.unavailable and self.circuit_open:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                continue  # the endpoint is down: wait for it, attempts used or not
            if attempts >= cfg.max_attempts:
                break
            delay = self._backoff_s(attempts)
            if outcome.retry_after_s is not None:
                delay = min(outcome.retry_after_s, cfg.retry_after_max_s)
            await asyncio.sleep(delay)
        self._send_to_dead_letter(record, outcome.reason, attempts)

    def _down_s(self) -> float:
        """How long the endpoint has been down (its circuit open since), 0 if it is up."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    async def _attempt(self, record: bytes, extra_headers: dict[str, str]) -> _Outcome:
        cfg = self._config
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=cfg.verify_tls, limit=cfg.concurrency)
            self._session = aiohttp.ClientSession(connector=connector)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            **extra_headers,
            SIGNATURE_HEADER: sign(cfg.signing_secret, timestamp, record),
        }
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s, sock_connect=min(cfg.timeout_s, 10))
        try:
            async with self._session.post(
                cfg.url, data=record, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ConnectionTimeoutError:
            return _Outcome(False, True, "connect timeout", unavailable=True)
        except TimeoutError:
            return _Outcome(False, True, f"timeout after {cfg.timeout_s}s")
        except aiohttp.ClientSSLError as exc:  # a certificate problem: not an outage
            return _Outcome(False, True, f"connection error: {type(exc).__name__}")
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, unreachable
            return _Outcome(
                False, True, f"connection error: {type(exc).__name__}", unavailable=True
            )
        except aiohttp.ClientError as exc:
            return _Outcome(False, True, f"connection error: {type(exc).__name__}")
        if 200 <= status < 300:
            return _Outcome(True, False, "", answered=True)
        if status == 429 or status >= 500:
            honoured = _retry_after_s(retry_after) if status in (429, 503) else None
            gateway = status in (502, 503, 504)  # a proxy answering for an endpoint that is not
            return _Outcome(
                False, True, f"http {status}", honoured, unavailable=gateway, answered=not gateway
            )
        return _Outcome(False, False, f"http {status}", answered=True)

    def _send_to_dead_letter(self, record: bytes, reason: str, attempts: int) -> None:
        url = self._config.safe_url
        letter = dead_letter(self.name, reason, attempts, record, sink="webhook", url=url)
        self._dead_letter.write_batch([letter])
        self.dead_lettered += 1
        # DEBUG: the dispatch logs every dead letter at WARNING with the action's ids
        log.debug(
            "webhook record dead-lettered",
            extra={"url": self._config.safe_url, "reason": reason, "attempts": attempts},
        )


def _ids_of(record: bytes) -> tuple[str | None, dict[str, str]]:
    """The record's customer (its lane) and its `Idempotency-Key` header (the action id)."""
    try:
        parsed = json.loads(record)
    except (ValueError, RecursionError):
        return None, {}
    if not isinstance(parsed, dict):
        return None, {}
    customer, action_id = parsed.get("customer_id"), parsed.get("action_id")
    headers = (
        {"Idempotency-Key": action_id}
        if isinstance(action_id, str) and action_id.isprintable()
        else {}
    )
    return (customer if isinstance(customer, str) else None), headers


class WebhookSink:
    """The synchronous `Sink`: `write_batch` hands records to a private event-loop thread
    and returns at once; `flush` returns when all of them are delivered or dead-lettered
    (and flushes the dead-letter sink); `close` flushes and stops the thread. The
    dead-letter sink belongs to the caller and is not closed."""

    def __init__(
        self,
        config: WebhookConfig,
        dead_letter: Sink,
        *,
        rng: random.Random | None = None,
        name: str = "webhook",
    ) -> None:
        self._dead_letter = dead_letter
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="webhook-sink", daemon=True
        )
        self._thread.start()
        self.delivery = WebhookDelivery(config, dead_letter, rng=rng, name=name)
        self._pending: list[concurrent.futures.Future[None]] = []
        self._closed = False

    @property
    def dead_lettered(self) -> int:
        return self.delivery.dead_lettered

    @property
    def retries(self) -> int:
        return self.delivery.retries

    @property
    def circuit_open(self) -> bool:
        return self.delivery.circuit_open

    def write_batch(self, records: Sequence[bytes]) -> None:
        if self._closed:
            raise RuntimeError("webhook sink is closed")
        if records:
            work = self.delivery.deliver(list(records))
            self._pending.append(asyncio.run_coroutine_threadsafe(work, self._loop))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        self._dead_letter.flush()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            asyncio.run_coroutine_threadsafe(self.delivery.aclose(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
