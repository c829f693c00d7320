"""The delivery loop: sends the outbox's due deliveries and records what came back.

It runs as a thread in each worker's main process (started with the reconciler, see
worker/celery_app.py), never in a pool process: a slow endpoint holds one of its
``webhook_concurrency`` sending threads for at most ``webhook_timeout_s``, never a job
slot or an API request. Several workers share the outbox through claims: a delivery is
claimed by one conditional UPDATE, so one loop sends it at a time; a loop that dies
mid-attempt leaves a claim that lapses, and the delivery is sent again (at least once:
receivers drop repeats by ``K2E-Event-Id``). The outbox is in the job store, so
deliveries wait through restarts of the API, Redis or the workers.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, or_, select, update

from k2e.db import aware, utcnow
from k2e.settings import Settings
from k2e.tables import webhook_deliveries, webhooks
from k2e.webhooks import sender
from k2e.webhooks.outbox import DELIVERED, FAILED, PENDING
from k2e.webhooks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, signature
from k2e.webhooks.targets import TargetPolicy, TargetRefused

log = logging.getLogger("k2e.webhooks")
d = webhook_deliveries
PRUNE_EVERY_S = 600.0


@dataclass(frozen=True)
class Schedule:
    """How long an attempt may take and when a failed delivery is tried again."""

    timeout_s: float
    base_s: float
    max_s: float
    window_s: float
    response_bytes: int
    history_s: float = 30 * 86400.0  # ended deliveries are listed this long

    def wait_after(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt: base, doubling, capped."""
        return float(min(self.max_s, self.base_s * 2 ** min(attempts - 1, 40)))


@dataclass(frozen=True)
class Claimed:
    id: str
    event_id: str
    body: str
    created_at: datetime
    attempts: int
    url: str
    secret: str


class Courier:
    """Claims due deliveries and sends them from a small pool of threads."""

    def __init__(
        self,
        engine: Engine,
        schedule: Schedule,
        policy: TargetPolicy,
        concurrency: int = 4,
        poll_s: float = 1.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.engine = engine
        self.tls = tls  # None: the system's trusted certificates
        self.schedule = schedule
        self.policy = policy
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:courier"
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="k2e-webhook")
        self._slots = threading.Semaphore(concurrency)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="k2e-webhooks", daemon=True)

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings) -> Courier:
        schedule = Schedule(
            timeout_s=settings.webhook_timeout_s,
            base_s=settings.webhook_retry_base_s,
            max_s=settings.webhook_retry_max_s,
            window_s=settings.webhook_retry_window_s,
            response_bytes=settings.webhook_response_bytes,
            history_s=settings.webhook_history_days * 86400,
        )
        policy = TargetPolicy(
            settings.webhook_allowed_networks, lookup_timeout_s=schedule.timeout_s
        )
        return cls(engine, schedule, policy, settings.webhook_concurrency, settings.webhook_poll_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; wait for the attempts under way (each ends within its timeout)."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        pruned_at = 0.0
        while not self._stop.is_set():
            try:
                self.dispatch_due()
                if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                    self.prune()
                    pruned_at = time.monotonic()
            except Exception:  # an unreachable store: try again next round
                log.warning("webhook round failed", exc_info=True)
            self._stop.wait(self.poll_s)

    def prune(self) -> int:
        """Remove delivered and given-up deliveries older than the history keeps."""
        cutoff = utcnow() - timedelta(seconds=self.schedule.history_s)
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    delete(d).where(d.c.state != PENDING, d.c.created_at < cutoff)
                ).rowcount
            )

    def dispatch_due(self) -> int:
        """Hand as many due deliveries to the sending threads as they have room for."""
        handed = 0
        while self._slots.acquire(blocking=False):
            batch = self.claim(1)
            if not batch:
                self._slots.release()
                break
            self._pool.submit(self._send_and_release, batch[0])
            handed += 1
        return handed

    def _send_and_release(self, claimed: Claimed) -> None:
        try:
            self.attempt(claimed)
        except Exception:
            log.warning("webhook delivery %s failed in k2e", claimed.id, exc_info=True)
        finally:
            self._slots.release()

    def claim(self, limit: int) -> list[Claimed]:
        """Take up to ``limit`` due deliveries for ``timeout_s`` and a margin."""
        now = utcnow()
        query = (
            select(d.c.id)
            .where(d.c.state == PENDING, d.c.next_attempt_at <= now)
            .where(or_(d.c.claimed_until.is_(None), d.c.claimed_until < now))
            .order_by(d.c.next_attempt_at)
            .limit(limit * 4)
        )
        until = now + timedelta(seconds=self.schedule.timeout_s + 30)
        taken: list[Claimed] = []
        with self.engine.begin() as conn:
            for delivery_id in conn.execute(query).scalars():
                won = conn.execute(
                    update(d)
                    .where(d.c.id == delivery_id, d.c.state == PENDING)
                    .where(or_(d.c.claimed_until.is_(None), d.c.claimed_until < now))
                    .values(claimed_by=self.owner, claimed_until=until)
                ).rowcount
                if not won:
                    continue
                row = conn.execute(
                    select(d, webhooks.c.url, webhooks.c.secret)
                    .join(webhooks, webhooks.c.id == d.c.webhook_id)
                    .where(d.c.id == delivery_id)
                ).first()
                if row is not None:
                    taken.append(
                        Claimed(
                            row.id,
                            row.event_id,
                            row.body,
                            aware(row.created_at),  # type: ignore[arg-type]
                            row.attempts,
                            row.url,
                            row.secret,
                        )
                    )
                if len(taken) >= limit:
                    break
        return taken

    def attempt(self, claimed: Claimed) -> sender.Outcome:
        """Check the target again (DNS may have changed), send, and record the outcome."""
        body = claimed.body.encode()
        try:
            target = self.policy.check(claimed.url)
        except TargetRefused as exc:
            outcome = sender.Outcome(error=f"refused before connecting: {exc.detail}")
        else:
            headers = {
                SIGNATURE_HEADER: signature(claimed.secret, body),
                EVENT_ID_HEADER: claimed.event_id,
            }
            outcome = sender.post(
                target,
                body,
                headers,
                self.schedule.timeout_s,
                self.schedule.response_bytes,
                self.tls,
            )
        self.record(claimed, outcome)
        return outcome

    def record(self, claimed: Claimed, outcome: sender.Outcome) -> None:
        now = utcnow()
        attempts = claimed.attempts + 1
        values: dict[str, object] = {
            "attempts": attempts,
            "last_attempt_at": now,
            "response_status": outcome.status,
            "response_excerpt": outcome.excerpt,
            "error": outcome.error,
            "claimed_by": None,
            "claimed_until": None,
        }
        if outcome.delivered:
            values.update(state=DELIVERED, delivered_at=now, next_attempt_at=None)
        else:
            if outcome.error is None:
                values["error"] = f"the endpoint answered {outcome.status}, not 2xx"
            retry_at = now + timedelta(seconds=self.schedule.wait_after(attempts))
            if retry_at > claimed.created_at + timedelta(seconds=self.schedule.window_s):
                values.update(state=FAILED, next_attempt_at=None)
            else:
                values["next_attempt_at"] = retry_at
        with self.engine.begin() as conn:
            conn.execute(
                update(d).where(d.c.id == claimed.id, d.c.claimed_by == self.owner).values(**values)
            )
        log.info(
            "webhook delivery %s attempt %d: %s",
            claimed.id,
            attempts,
            outcome.status if outcome.status is not None else outcome.error,
        )
