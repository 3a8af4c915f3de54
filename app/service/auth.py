"""Who may act on a session: tokens and the facts that authorise a request."""

from __future__ import annotations

import hashlib
import hmac
import math
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.errors import SessionNotFound
from app.service.records import tensor_names
from app.store.models import SessionRecord
from app.store.repository import SessionRepository, SessionRow
from app.tensors import Layout

TOKEN_BYTES = 32


# Compared against when the id is unknown, so that an unknown id and a wrong token take the same
# time as well as getting the same 404.
_DUMMY_TOKEN_HASH = hashlib.sha256(b"no session has this token").hexdigest()


def hash_token(token: str) -> str:
    """Tokens are stored as hex SHA-256: high-entropy random strings need no slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token_hash: str | None, token: str) -> bool:
    """Whether `token` is the one stored as `token_hash` (None: no such session), compared in
    constant time; an unknown session costs the same comparison as a wrong token."""
    expected = token_hash if token_hash is not None else _DUMMY_TOKEN_HASH
    return hmac.compare_digest(hash_token(token), expected) and token_hash is not None


@dataclass(frozen=True)
class SessionFacts:
    """What never changes about a session: its token's hash and the size of its tensors.

    Enough to authorise a request and to bound its body before the body is read: a gradient
    holds `elements` numbers in `tensors` tensors, written in JSON with `arrays` nested arrays
    (1 + d₁ + d₁d₂ + … + d₁⋯d_{k−1} per tensor of shape (d₁, …, d_k)).
    """

    id: uuid.UUID
    token_hash: str
    tensors: int
    elements: int
    arrays: int
    names_bytes: int
    """The tensors' names, UTF-8 encoded, all together (they travel in every named body)."""
    dtype: str
    """The session's float dtype: a body's numbers are read into it before any transaction."""
    layout: Layout
    """The form of its θ (one array, or named arrays): a JSON gradient comes in that form."""
    names: tuple[str, ...]
    """Its tensors' names, in order (a file's `rows/<x>` is rows unless `<x>` is one)."""


def session_facts(db: Session, session_id: str) -> SessionFacts | None:
    """The session's `SessionFacts` (one row read, no lock), or None if the id names none."""
    try:
        parsed_id = uuid.UUID(session_id)
    except ValueError:
        return None
    record = SessionRepository(db).get(parsed_id)
    if record is None:
        return None
    shapes = [tensor["shape"] for tensor in record.tensors]
    return SessionFacts(
        id=record.id,
        token_hash=record.token_hash,
        tensors=len(shapes),
        elements=sum(math.prod(shape) for shape in shapes),
        arrays=sum(math.prod(shape[:depth]) for shape in shapes for depth in range(len(shape))),
        names_bytes=sum(len(name.encode()) for name in tensor_names(record)),
        dtype=record.dtype,
        layout=Layout(record.layout),
        names=tuple(tensor_names(record)),
    )


def authorized_record(
    repository: SessionRepository, session_id: str, token: str, *, for_update: bool = False
) -> SessionRecord:
    """The session if `token` is its token; otherwise the same 404 whether or not it exists."""
    try:
        parsed_id = uuid.UUID(session_id)
    except ValueError:
        raise SessionNotFound() from None
    record = repository.get(parsed_id, for_update=for_update)
    if not token_matches(record.token_hash if record is not None else None, token):
        raise SessionNotFound()
    return record


def authorized_row(repository: SessionRepository, session_id: str, token: str) -> SessionRow:
    """As `authorized_record`, locked, as a plain `SessionRow` (the step path: one Core SELECT
    and none of the ORM's bookkeeping)."""
    try:
        parsed_id = uuid.UUID(session_id)
    except ValueError:
        raise SessionNotFound() from None
    row = repository.row(parsed_id, for_update=True)
    if not token_matches(row.token_hash if row is not None else None, token):
        raise SessionNotFound()
    return row
