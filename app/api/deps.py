"""Dependencies, as named `Annotated` aliases for the endpoints' signatures."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.bodies import TensorBody, json_body, prefers_safetensors, tensor_body
from app.clock import Clock
from app.config import Settings
from app.errors import ApiKeyRequired, TokenMissing
from app.store.database import Database

_bearer = HTTPBearer(auto_error=False, description="The session's token, from its creation.")
_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Needed to create sessions when the server has OPTAAS_API_KEYS.",
)


# The dependencies are `async def`: FastAPI runs a plain `def` dependency in the thread pool,
# one hand-off per dependency per request, where these only read the request or the app.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_database(request: Request) -> Database:
    return request.app.state.database


async def bearer_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    """`Authorization: Bearer …` as `session_token`'s dependency reads it (by hand: the step
    route's direct handler, `app.api.direct`)."""
    return await _bearer(request)


async def session_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer token of `Authorization: Bearer <token>`; 401 when there is none."""
    if credentials is None or not credentials.credentials:
        raise TokenMissing("this endpoint needs the session's token: Authorization: Bearer <token>")
    return credentials.credentials


async def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    key: Annotated[str | None, Depends(_api_key)],
) -> str | None:
    """With API keys configured, `X-API-Key` must be one of them (401 otherwise): the key used.

    None when the server has no keys (creation is open): a key sent anyway means nothing.
    """
    if not settings.api_keys:
        return None
    valid = valid_api_key(key, settings)
    if valid is None:
        raise ApiKeyRequired("creating a session on this server needs a valid X-API-Key header")
    return valid


def valid_api_key(given: str | None, settings: Settings) -> str | None:
    """`given` if it is one of the server's API keys, else None. Compared with every key, so
    the time taken does not tell which one came close."""
    encoded = (given or "").encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(encoded, allowed.encode()) for allowed in settings.api_keys]
    return given if given is not None and any(matches) else None


async def answer_in_safetensors(request: Request) -> bool:
    """Whether the answer's tensors go out as a safetensors file (`Accept`), not JSON."""
    return prefers_safetensors(request.headers.get("accept"))


def get_clock(request: Request) -> Clock:
    return request.app.state.clock


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
DatabaseDep = Annotated[Database, Depends(get_database)]
TokenDep = Annotated[str, Depends(session_token)]
ApiKeyDep = Annotated[str | None, Depends(require_api_key)]
JsonBodyDep = Annotated[bytes, Depends(json_body)]
TensorBodyDep = Annotated[TensorBody, Depends(tensor_body)]
SafetensorsAnswerDep = Annotated[bool, Depends(answer_in_safetensors)]
