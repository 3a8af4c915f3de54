"""What a request did, beyond its status: noted as it runs, read by the access log and metrics.

The API's middleware (`app.api.observability`) opens a `RequestFacts` per request in a context
variable; code further in adds what only it knows with `note_step(...)` — the optimizer type of
the session a step went to, whether the step was skipped. The thread pool runs use-cases in a
copy of the request's context, which holds the same `RequestFacts` object, so what is noted there
is seen by the middleware. Outside a request, noting does nothing. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestFacts:
    optimizer: str | None = None
    """The optimizer type of the session a step went to (None: not read that far)."""
    skipped: bool = False
    """The step's gradient was not finite and `nonfinite: skip` left everything unchanged."""


_current: ContextVar[RequestFacts | None] = ContextVar("optaas_request_facts", default=None)


@contextmanager
def request_facts() -> Iterator[RequestFacts]:
    """A fresh `RequestFacts` for the code run inside the block (one request)."""
    facts = RequestFacts()
    token = _current.set(facts)
    try:
        yield facts
    finally:
        _current.reset(token)


def note_step(*, optimizer: str | None = None, skipped: bool | None = None) -> None:
    """Note facts about the step the current request is taking (arguments left None: unchanged)."""
    facts = _current.get()
    if facts is None:
        return
    if optimizer is not None:
        facts.optimizer = optimizer
    if skipped is not None:
        facts.skipped = skipped
