"""The one way out: every request the client sends goes through `Transport.request`.

It adds the bearer token and, on POST and PATCH, an `Idempotency-Key` made once per logical
call and sent with each of its attempts, so that a retried step is applied once. It retries by
a `RetryPolicy`: connection errors and timeouts, 429, 500 and 502–504, `Retry-After` as a lower
bound. A 2xx answer is returned; an error answer is raised as the exception `error_for` picks.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from optaas_state import in_pieces

from optaas_client.errors import ConnectionFailed, error_for, retry_after_seconds

JSON_MEDIA_TYPE = "application/json"
USER_AGENT = "optaas-client/0.1"
MAX_CONNECT_SECONDS = 5.0

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers that say "not now" or "failed on the way"; 408 (a wait that timed out) is an answer."""

RETRIED_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
"""Connection refused, reset or lost, and timeouts. Errors of the request itself (a bad URL,
an unsupported scheme) are not retried."""

IDEMPOTENT_BY_KEY = frozenset({"POST", "PATCH"})
"""Methods that change something without being idempotent themselves: they carry a key."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    Attempt n (n = 0, 1, …, `retries` − 1 after the first) waits
    `min(max_delay, max(retry_after, backoff · 2ⁿ · u))` seconds, u uniform in [0.5, 1)
    (jitter, so that clients that failed together do not retry together).
    """

    retries: int = 5
    backoff: float = 0.25
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        exponential = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
        return min(self.max_delay, max(retry_after or 0.0, exponential))


def request_timeout(seconds: float) -> httpx.Timeout:
    """`seconds` for everything, connecting within at most `MAX_CONNECT_SECONDS`."""
    return httpx.Timeout(seconds, connect=min(MAX_CONNECT_SECONDS, seconds))


class Transport:
    """One server's HTTP connections, the retry policy and the idempotency keys.

    `timeout` bounds every request (its default; a request may ask for longer). `transport`
    (an httpx transport) is for tests and special networks. Thread-safe, like httpx's client.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        retry: RetryPolicy,
        transport: httpx.BaseTransport | None = None,
        trust_env: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self._http = httpx.Client(
            base_url=self.url,
            timeout=request_timeout(timeout),
            transport=transport,
            trust_env=trust_env,
            headers={"User-Agent": USER_AGENT, "Accept": JSON_MEDIA_TYPE},
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retried_404_is_gone: bool = False,
    ) -> httpx.Response:
        """Send a request, retrying by the policy; the 2xx answer, or the typed error raised.

        A POST or PATCH carries one `Idempotency-Key` for all its attempts. With
        `retried_404_is_gone` (DELETE), a 404 after a lost answer means the first attempt
        did it, and is returned as the answer.
        """
        all_headers = {"Content-Type": JSON_MEDIA_TYPE} if content is not None else {}
        all_headers.update(headers or {})
        if content is not None:
            all_headers["Content-Length"] = str(len(content))
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if method in IDEMPOTENT_BY_KEY:
            all_headers.setdefault("Idempotency-Key", str(uuid.uuid4()))
        send_timeout = request_timeout(timeout) if timeout is not None else self._http.timeout
        lost_answer = False
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = self._http.request(
                    method,
                    path,
                    content=content if content is None else in_pieces(content),
                    headers=all_headers,
                    params=params,
                    timeout=send_timeout,
                )
            except RETRIED_ERRORS as error:
                if last:
                    raise ConnectionFailed(
                        f"{method} {path}: no answer after {attempt + 1} attempts: {error!r}"
                    ) from error
                lost_answer = True
                time.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRIED_STATUSES and not last:
                time.sleep(self.retry.delay(attempt, retry_after_seconds(response.headers)))
                continue
            if response.is_success:
                return response
            if response.status_code == 404 and retried_404_is_gone and lost_answer:
                return response
            raise error_for(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def status_of(self, path: str) -> int | None:
        """The status of one GET of `path`, not retried; None if nothing answered."""
        try:
            return self._http.get(path).status_code
        except httpx.TransportError:
            return None
