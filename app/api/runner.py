"""The use-case runner every endpoint shares: one call into the thread pool, one transaction
that commits before the answer is sent (an acknowledged change is a committed change), and the
`Idempotency-Key` bookkeeping around it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from fastapi import Response
from starlette.concurrency import run_in_threadpool

from app.api.idempotency import Answer, IdempotencyKeeper, Replay
from app.errors import OptaasError
from app.optim import OptimError
from app.store.database import Database, Redo, WouldWait

Result = TypeVar("Result")


class Answerable(Protocol):
    """What a use case's answer is made into: a kept `Answer`, or one streamed from arrays."""

    def response(self) -> Response: ...

    def kept(self) -> Answer:
        """The answer with a body of its own bytes (a streamed one's pieces joined)."""
        ...


class Detachable(Protocol):
    """A result that may show arrays the commit hands on to the next change (a step's θ in a
    working set): `detached()` gives one that stays as it is, copying only if it must."""

    def detached(self) -> Detachable: ...


async def run_use_case(
    database: Database,
    use_case: Callable[..., Result],
    answer: Callable[[Result], Answerable],
    *,
    write: bool,
    parse: Callable[[], Any] | None = None,
    keeper: IdempotencyKeeper | None = None,
    inline: bool = False,
) -> Response:
    """In the thread pool: run `use_case` in one transaction, commit, then answer.

    With `parse`, the body is parsed first, outside the transaction (no lock is held while it
    is read): `use_case(db, parse())`. Otherwise `use_case(db)`.

    With an `Idempotency-Key` (`keeper`), the use case names the key's scope, and the answer is
    made inside the transaction and kept with the change it reports; a repeat of a request
    that was applied gets the kept answer instead (see `app.api.idempotency`): made into bytes
    of its own there (`kept()`), as it is sent after the commit. Any other answer is made after
    the commit, from the result `detached()` if it is `Detachable` (the stepping layer copies
    θ then, before the commit, if the next step may change it), and may be streamed from its
    arrays.

    `inline`: the caller says the work is tiny (a step of a small session), so it runs on the
    event loop — no hand-off to a thread and back, which cost more than such a step does —
    as long as it needs no wait: the transaction begins with `wait=False` (where the database
    allows it, `Database.waits_only_for_locks`), and work that would wait for a lock (or a
    body that fails to parse under a key, which is looked up) goes to the thread pool as any
    other.

    A use case that raises `Redo` (an optimistic step that found its session moved on) has
    changed nothing: it is run once more, in a transaction that locks first.
    """

    def run(given: tuple[Any, ...], wait: bool) -> Response:
        try:
            return attempt(given, wait, lock_first=False)
        except Redo:
            return attempt(given, wait, lock_first=True)

    def attempt(given: tuple[Any, ...], wait: bool, *, lock_first: bool) -> Response:
        try:
            with database.transaction(write=write, wait=wait, lock_first=lock_first) as db:
                try:
                    result = use_case(db, *given)
                except (OptaasError, OptimError):
                    if keeper is not None:  # a repeat that fails where its original did not
                        keeper.replay_if_kept(db)
                    raise
                if keeper is not None:
                    made = answer(result).kept()
                    keeper.keep(db, made)
                    return made.response()
                # A `Detachable`, found by its method (`isinstance` of a runtime-checkable
                # protocol cost 15 µs a request); the answer below is made after the commit.
                detached = getattr(result, "detached", None)
                if detached is not None:
                    result = detached()
        except Replay as replay:
            return replay.answer.response(replayed=True)
        return answer(result).response()

    def parse_and_run() -> Response:
        try:
            given = _parsed(database, parse, keeper)
        except Replay as replay:
            return replay.answer.response(replayed=True)
        return run(given, wait=True)

    if not (inline and database.waits_only_for_locks):
        return await run_in_threadpool(parse_and_run)
    try:
        given = () if parse is None else (parse(),)
    except (OptaasError, OptimError):
        if keeper is None:
            raise
        return await run_in_threadpool(parse_and_run)  # the key is looked up there
    try:
        return run(given, wait=False)
    except WouldWait:
        return await run_in_threadpool(run, given, True)


def _parsed(
    database: Database, parse: Callable[[], Any] | None, keeper: IdempotencyKeeper | None
) -> tuple[Any, ...]:
    """`(parse(),)`, or () without `parse`. A body that fails to parse under a key whose scope
    is known already (a creation's) is looked up first, as a failing use case is: a repeat of a
    request that was applied gets its answer (`Replay`), a different one the key's 422."""
    if parse is None:
        return ()
    try:
        return (parse(),)
    except (OptaasError, OptimError):
        if keeper is not None:
            with database.transaction(write=False) as db:
                keeper.replay_if_kept(db)
        raise
