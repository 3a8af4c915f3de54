"""`ETag` and `If-Match` (RFC 9110 §8.8.3, §13.1.1): a session's entity tag is its step count.

Every answer that shows a session carries `ETag: "<t>"`. A step sent with `If-Match` is applied
only if one of the listed tags matches the session's by strong comparison (a weak tag `W/"…"`
never matches) or the value is `*` (any existing session); otherwise 412 with `current_step`.
The condition is evaluated with the session locked, after authorisation (a wrong token is still
a 404) and after an idempotent replay (a retry of an applied step gets its answer, not a 412).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.errors import InvalidHeader, PreconditionFailed

HEADER = "If-Match"

_OPAQUE_TAG = r'"[\x21\x23-\x7e\x80-\xff]*"'  # etagc: visible ASCII but DQUOTE, and obs-text
_TAG = rf"(W/)?({_OPAQUE_TAG})"
_ELEMENT = rf"[ \t]*(?:(?:W/)?{_OPAQUE_TAG}[ \t]*)?"
_TAG_LIST = re.compile(rf"{_ELEMENT}(?:,{_ELEMENT})*")  # #entity-tag: empty elements allowed


def etag(step: int) -> str:
    """The session's step count as a strong entity tag."""
    return f'"{step}"'


@dataclass(frozen=True)
class IfMatch:
    """A parsed `If-Match`: `*`, or the strong tags it lists (weak ones cannot match)."""

    any_tag: bool
    strong_tags: frozenset[str]

    @classmethod
    def parse(cls, values: list[str]) -> IfMatch:
        """From the header's field lines (joined as one list); 400 if it is not a tag list."""
        value = ", ".join(values).strip(" \t")
        if value == "*":
            return cls(any_tag=True, strong_tags=frozenset())
        tags = re.findall(_TAG, value)
        if not tags or _TAG_LIST.fullmatch(value) is None:
            raise InvalidHeader(
                f'{HEADER} must be * or a list of quoted entity tags, e.g. {HEADER}: "12"',
                header=HEADER,
            )
        return cls(any_tag=False, strong_tags=frozenset(tag for weak, tag in tags if not weak))

    def require(self, step: int) -> None:
        """Raise 412 (with `current_step`) unless the session at `step` matches."""
        if self.any_tag or etag(step) in self.strong_tags:
            return
        raise PreconditionFailed(
            f"the session is at step {step} ({HEADER} must list ETag {etag(step)}); "
            "nothing was applied",
            current_step=step,
        )


async def if_match(request: Request) -> IfMatch | None:
    """The request's `If-Match` (all its field lines), or None without one."""
    values = request.headers.getlist(HEADER)
    return IfMatch.parse(values) if values else None


IfMatchDep = Annotated[IfMatch | None, Depends(if_match)]
