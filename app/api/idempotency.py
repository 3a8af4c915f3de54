"""`Idempotency-Key`: a request applied once, its answer kept and replayed to every retry.

The reusable piece behind every endpoint that accepts the header (step and create today; fork
and import later). The endpoint's use case names the key's *scope* once it knows it — for a
step, after authorising and locking the session —, and `run_use_case` *keeps* the answer in the
same transaction as the change it reports. So a kept answer exists exactly when the change does:

- first request with the key: applied, its answer kept (2xx only; an error rolls everything
  back, and a retry is evaluated afresh);
- a retry (same fingerprint) while the answer is kept: `Replay` — the kept status, headers and
  body, byte for byte, plus `Idempotent-Replayed: true`; its own transaction is rolled back,
  so nothing is applied twice;
- the same key with another request (fingerprint = SHA-256 over method, path, query, content
  type, accept and body): 422 `idempotency-key-reused`;
- a retry after the answer expired (`OPTAAS_IDEMPOTENCY_TTL_SECONDS`): 422
  `idempotency-key-expired` — the record stays as a tombstone, so nothing is applied twice.

The record is written once, at the end (`INSERT … ON CONFLICT DO NOTHING`): a repeat is found
by that insert, or — when the repeat fails where the original succeeded, e.g. a stale
`If-Match` — by a lookup on the error path. So a first request costs one statement, and only
repeats do work that is then rolled back. With the session locked, a repeat always finds the
original's committed record; concurrent creations with one key meet at the unique key.

Keys and requests are stored only as digests; the kept body is sealed (AES-GCM) with a key
derived from the Idempotency-Key itself, since a creation's answer holds the session's token,
which the database must not hold in the clear.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.bodies import read_body
from app.api.deps import SettingsDep
from app.clock import SYSTEM_CLOCK, Clock
from app.config import Settings
from app.errors import IdempotencyKeyExpired, IdempotencyKeyReused, InvalidHeader
from app.store.database import Database
from app.store.models import IdempotencyRecord
from app.store.repository import PRUNE_BATCH_ROWS, IdempotencyRepository

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEPT_HEADERS = ("Content-Type", "ETag", "Location")
"""The answer's headers that a replay repeats (the others, like Date, belong to each answer)."""

_NONCE_BYTES = 12
_SEAL_INFO = b"optaas idempotency answer v1\0"


@dataclass(frozen=True)
class Answer:
    """An answer as kept: its status, the headers that matter, and the body's bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def kept(self) -> Answer:
        """Itself: its body is its own bytes already."""
        return self

    def response(self, *, replayed: bool = False) -> Response:
        headers = {**self.headers, REPLAYED_HEADER: "true"} if replayed else self.headers
        return Response(self.body, status_code=self.status, headers=headers)


class Replay(Exception):  # noqa: N818 (not an error: it carries the kept answer out of the transaction)
    """Raised inside the use case's transaction when the key's answer is kept: send it again."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("replay")
        self.answer = answer


@dataclass(frozen=True)
class RequestIdentity:
    """What makes two requests the same request: the fingerprint's ingredients."""

    method: str
    path: str
    query: str
    content_type: str
    accept: str
    body: bytes | bytearray

    @functools.cached_property
    def fingerprint_hex(self) -> str:
        return self.fingerprint()

    def fingerprint(self) -> str:
        """Hex SHA-256 over the parts, each prefixed by its length (so no two splits collide)."""
        digest = hashlib.sha256()
        for part in (self.method, self.path, self.query, self.content_type, self.accept):
            encoded = part.encode("utf-8", "surrogateescape")
            digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(self.body).to_bytes(8, "big") + self.body)
        return digest.hexdigest()


@dataclass
class IdempotencyKeeper:
    """One request's `Idempotency-Key`: where it is unique, and the answer kept under it."""

    key: str
    request: RequestIdentity
    ttl: timedelta
    clock: Clock = SYSTEM_CLOCK
    _scope: str | None = field(default=None, init=False)
    _session_id: uuid.UUID | None = field(default=None, init=False)

    @property
    def key_hash(self) -> str:
        return hashlib.sha256(self.key.encode("utf-8", "surrogateescape")).hexdigest()

    def scope(self, scope: str, session_id: uuid.UUID | None = None) -> None:
        """Where the key is unique; the use case says so before it changes anything, holding
        the lock of what it changes (for a session: after `SELECT … FOR UPDATE`). Records of a
        `session_id` are deleted with the session."""
        self._scope, self._session_id = scope, session_id

    def replay_if_kept(self, db: Session) -> None:
        """If this key was used in its scope before: `Replay` its answer, or a 422. Else nothing."""
        if self._scope is None:
            return  # the request failed before its scope was known (e.g. a wrong token)
        existing = IdempotencyRepository(db).get(self._scope, self.key_hash)
        if existing is not None:
            self._answer_repeat(existing)

    def keep(self, db: Session, answer: Answer) -> None:
        """Keep a 2xx `answer` under the key, in the transaction of the change it reports.

        If the key turns out to be used already, this request is a repeat: raises `Replay` or a
        422, and the caller's transaction — this request's change — is rolled back.
        """
        if self._scope is None:
            raise RuntimeError("keep() before scope(): the use case must name the key's scope")
        if not 200 <= answer.status < 300:
            raise ValueError(f"only successful answers are kept, not {answer.status}")
        now = self.clock.now()
        record = IdempotencyRecord(
            scope=self._scope,
            key_hash=self.key_hash,
            session_id=self._session_id,
            fingerprint=self.request.fingerprint_hex,
            status=answer.status,
            headers={name: answer.headers[name] for name in KEPT_HEADERS if name in answer.headers},
            body=self._seal(self._scope, answer.body),
            created_at=now,
            expires_at=now + self.ttl,
        )
        existing = IdempotencyRepository(db).add_unless_present(record)
        if existing is not None:
            self._answer_repeat(existing)

    def _answer_repeat(self, existing: IdempotencyRecord) -> NoReturn:
        """A repeat of the request `existing` records: replay it, or refuse with a 422."""
        if existing.fingerprint != self.request.fingerprint_hex:
            raise IdempotencyKeyReused(
                f"this {HEADER} was used before for a different request (another body, path, "
                "query or media type); use a new key for a new request"
            )
        kept_until = existing.expires_at
        if existing.body is None or existing.status is None or kept_until <= self.clock.now():
            raise IdempotencyKeyExpired(
                f"the request with this {HEADER} was already applied, and its response is no "
                "longer kept; nothing was applied now"
            )
        body = self._open(existing.scope, existing.body)
        raise Replay(Answer(existing.status, dict(existing.headers or {}), body))

    def _cipher(self, scope: str) -> AESGCM:
        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO + scope.encode()
        )
        return AESGCM(hkdf.derive(self.key.encode("utf-8", "surrogateescape")))

    def _seal(self, scope: str, body: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._cipher(scope).encrypt(nonce, body, self.key_hash.encode())

    def _open(self, scope: str, sealed: bytes) -> bytes:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._cipher(scope).decrypt(nonce, ciphertext, self.key_hash.encode())


def session_scope(session_id: uuid.UUID) -> str:
    """A session's keys are unique per session."""
    return f"session/{session_id}"


def creation_scope(endpoint: str, caller: str) -> str:
    """A creating endpoint's keys are unique per endpoint and caller (`app.api.admission`: its
    API key, or its address on a server without keys), so that no caller is ever handed the
    answer — the token — of another's creation."""
    return f"{endpoint}/{caller}"


async def idempotency_keeper(
    request: Request, settings: SettingsDep, body: Annotated[bytes, Depends(read_body)]
) -> IdempotencyKeeper | None:
    """The request's keeper if it carries an `Idempotency-Key` (400 if the key is empty or long)."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidHeader(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters long, not {len(key)}",
            header=HEADER,
        )
    identity = RequestIdentity(
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        content_type=request.headers.get("content-type", ""),
        accept=request.headers.get("accept", ""),
        body=body,
    )
    identity.fingerprint_hex  # noqa: B018  (now: a step may use the body's tensors as scratch)
    ttl = timedelta(seconds=settings.idempotency_ttl_seconds)
    return IdempotencyKeeper(key, identity, ttl, request.app.state.clock)


IdempotencyDep = Annotated[IdempotencyKeeper | None, Depends(idempotency_keeper)]


# -- pruning ------------------------------------------------------------------------------


def prune(database: Database, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> tuple[int, int]:
    """Drop expired answers (their tombstones stay) and forget old tombstones of creations.

    In batches, one short write transaction each; returns (answers dropped, records forgotten).
    """
    now = clock.now()
    cutoff = now - timedelta(seconds=settings.idempotency_tombstone_ttl_seconds)
    dropped = _in_batches(database, lambda records: records.drop_expired_answers(now))
    forgotten = _in_batches(database, lambda records: records.forget_sessionless_before(cutoff))
    return dropped, forgotten


def _in_batches(database: Database, batch: Callable[[IdempotencyRepository], int]) -> int:
    total = 0
    while True:
        with database.transaction(write=True) as db:
            count = batch(IdempotencyRepository(db))
        total += count
        if count < PRUNE_BATCH_ROWS:
            return total


def prune_interval_seconds(settings: Settings) -> float:
    """Often enough that answers outlive their TTL by little; at most once a minute."""
    return min(60.0, max(1.0, settings.idempotency_ttl_seconds / 2))


async def prune_periodically(database: Database, settings: Settings, clock: Clock) -> None:
    """Prune now and then every interval of `clock`, until cancelled; a failure is logged, not
    fatal."""
    while True:
        try:
            await run_in_threadpool(prune, database, settings, clock)
        except SQLAlchemyError as error:
            logger.warning("idempotency pruning failed: %s", str(error).splitlines()[0])
        await clock.sleep(prune_interval_seconds(settings))
