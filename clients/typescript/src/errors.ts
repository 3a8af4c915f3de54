/**
 * What the client throws: one family under `OptaasClientError`.
 *
 * Error answers are RFC 9457 problem documents (`application/problem+json`); each becomes the
 * class of its problem type's slug (`/problems/gradient-mismatch` → `ShapeMismatch`), else of
 * its HTTP status (`422` → `InvalidContent`), else `ServerError` (5xx) or `ApiError`.
 */
import type { components } from "./openapi.js";

export type Problem = components["schemas"]["Problem"] & Record<string, unknown>;

/** Base of everything this client throws. */
export class OptaasClientError extends Error {
  override name = "OptaasClientError";
}

/** The server could not be reached (or stopped answering) on any attempt. */
export class ConnectionFailed extends OptaasClientError {
  override name = "ConnectionFailed";
}

/** The server answered something this client cannot read. */
export class ProtocolError extends OptaasClientError {
  override name = "ProtocolError";
}

/**
 * An error answer: the problem document and the HTTP status. `slug` is the last part of the
 * problem `type`; `problem` holds every member, extensions (`tensor`, `current_step`, …) included.
 */
export class ApiError extends OptaasClientError {
  override name = "ApiError";
  readonly type: string;
  readonly slug: string;
  readonly title: string;
  readonly detail: string;

  constructor(
    readonly status: number,
    readonly problem: Problem,
    readonly headers: Headers,
  ) {
    const title = String(problem.title ?? "");
    const detail = String(problem.detail ?? "");
    super(`${status} ${title}: ${detail}`.trim());
    this.type = String(problem.type ?? "about:blank");
    this.slug = this.type.split("/").pop() ?? "";
    this.title = title;
    this.detail = detail;
  }

  protected member<T>(name: string): T | undefined {
    return this.problem[name] as T | undefined;
  }
}

/** 400: a malformed body or an unreadable header. */
export class BadRequest extends ApiError {
  override name = "BadRequest";
}

/** 401: no bearer token, or (creating and importing) no valid `X-API-Key`. */
export class AuthenticationRequired extends ApiError {
  override name = "AuthenticationRequired";
}

/** 404 for anything but a session: a path this server does not serve. */
export class NotFound extends ApiError {
  override name = "NotFound";
}

/** 404: no session with this id, or not with this token (the service does not say which). */
export class SessionNotFound extends NotFound {
  override name = "SessionNotFound";
}

/** 408: a wait for a step (`params({ waitForStep })`) ran out first. */
export class StepWaitTimeout extends ApiError {
  override name = "StepWaitTimeout";
  get currentStep(): number | undefined {
    return this.member("current_step");
  }
}

/** 412: the session was no longer at the step `ifMatch` named. */
export class PreconditionFailed extends ApiError {
  override name = "PreconditionFailed";
  get currentStep(): number | undefined {
    return this.member("current_step");
  }
}

/** 413: the body is over the server's `OPTAAS_MAX_BODY_BYTES`. */
export class PayloadTooLarge extends ApiError {
  override name = "PayloadTooLarge";
}

/** 415: the endpoint does not take this content type. */
export class UnsupportedMediaType extends ApiError {
  override name = "UnsupportedMediaType";
}

/** 422: well-formed but unacceptable content; nothing was changed. */
export class InvalidContent extends ApiError {
  override name = "InvalidContent";
  get field(): string | undefined {
    return this.member("field");
  }
}

/** 422 `gradient-mismatch`: a gradient's name, shape or count differs from the parameters'. */
export class ShapeMismatch extends InvalidContent {
  override name = "ShapeMismatch";
  get tensor(): string | undefined {
    return this.member("tensor");
  }
  get expectedShape(): number[] | undefined {
    return this.member("expected_shape");
  }
  get gotShape(): number[] | undefined {
    return this.member("got_shape");
  }
}

/** 422 `non-finite-gradient`: NaN or ±Inf in a gradient of a `nonfinite: "reject"` session. */
export class NonFiniteGradient extends InvalidContent {
  override name = "NonFiniteGradient";
  get tensor(): string | undefined {
    return this.member("tensor");
  }
}

/** 422 `invalid-hyper-parameter`: `field` names the offending setting. */
export class InvalidHyperParameter extends InvalidContent {
  override name = "InvalidHyperParameter";
}

/** 422 `validation-error`: `errors` lists each problem (`loc`, `msg`, `type`). */
export class ValidationFailed extends InvalidContent {
  override name = "ValidationFailed";
  get errors(): { loc: (string | number)[]; msg: string; type: string }[] {
    return this.member("errors") ?? [];
  }
}

/** 422: the `Idempotency-Key` was used before for a different request. */
export class IdempotencyKeyReused extends InvalidContent {
  override name = "IdempotencyKeyReused";
}

/** 422: the key's request was applied, but its answer is no longer kept. */
export class IdempotencyKeyExpired extends InvalidContent {
  override name = "IdempotencyKeyExpired";
}

/** 503 on every attempt: the session stayed busy, or the database unreachable. */
export class ServiceUnavailable extends ApiError {
  override name = "ServiceUnavailable";
  /** `Retry-After` in milliseconds, if the server sent one. */
  get retryAfterMs(): number | undefined {
    return retryAfterMs(this.headers);
  }
}

/** Any other 5xx on every attempt (a 500 is a bug in the server). */
export class ServerError extends ApiError {
  override name = "ServerError";
}

type ApiErrorClass = new (status: number, problem: Problem, headers: Headers) => ApiError;

const ERRORS_BY_SLUG: Record<string, ApiErrorClass> = {
  "session-not-found": SessionNotFound,
  "gradient-mismatch": ShapeMismatch,
  "non-finite-gradient": NonFiniteGradient,
  "invalid-hyper-parameter": InvalidHyperParameter,
  "validation-error": ValidationFailed,
  "idempotency-key-reused": IdempotencyKeyReused,
  "idempotency-key-expired": IdempotencyKeyExpired,
};

const ERRORS_BY_STATUS: Record<number, ApiErrorClass> = {
  400: BadRequest,
  401: AuthenticationRequired,
  404: NotFound,
  408: StepWaitTimeout,
  412: PreconditionFailed,
  413: PayloadTooLarge,
  415: UnsupportedMediaType,
  422: InvalidContent,
  503: ServiceUnavailable,
};

/** The typed error for an error answer: by problem slug, else by status. `body` is the answer's
 *  body as openapi-fetch read it (the parsed problem document, or text that was not JSON). */
export function errorFor(response: Response, body: unknown): ApiError {
  const problem: Problem =
    typeof body === "object" && body !== null && !Array.isArray(body)
      ? ({ ...body } as Problem)
      : ({ title: response.statusText, detail: String(body ?? "").slice(0, 500) } as Problem);
  problem.status ??= response.status;
  const slug =
    String(problem.type ?? "")
      .split("/")
      .pop() ?? "";
  const kind =
    ERRORS_BY_SLUG[slug] ?? ERRORS_BY_STATUS[response.status] ?? (response.status >= 500 ? ServerError : ApiError);
  return new kind(response.status, problem, response.headers);
}

/** `Retry-After` in milliseconds (the delay-seconds form; an HTTP date counts as absent). */
export function retryAfterMs(headers: Headers): number | undefined {
  const value = headers.get("retry-after");
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) ? Math.max(0, seconds) * 1000 : undefined;
}
