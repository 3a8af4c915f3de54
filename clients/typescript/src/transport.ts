/**
 * One transport for every call: the generated API client (`openapi-fetch` over the types made
 * from the server's OpenAPI document) sending through a fetch that keeps the retry rule.
 *
 * The rule (the Python client's): every attempt has a timeout; connection errors, timeouts, and
 * 429, 500, 502, 503 and 504 answers are tried again, up to `retries` more times, after
 * `min(maxDelayMs, max(Retry-After, backoffMs · 2ⁿ · u))` (n = 0, 1, …; u uniform in [0.5, 1));
 * every POST and PATCH carries one `Idempotency-Key`, made once per call and sent with each of
 * its attempts, so a step whose answer was lost is applied once and its retry gets the kept
 * answer. Other answers (the 4xx, a 408 wait that ran out) are answers, not failures.
 */
import createClient, { type Client as FetchClient } from "openapi-fetch";
import { ConnectionFailed, retryAfterMs } from "./errors.js";
import type { paths } from "./openapi.js";

export type ApiClient = FetchClient<paths>;

/** How often and how long to retry. */
export class RetryPolicy {
  /** Attempts after the first. */
  readonly retries: number;
  readonly backoffMs: number;
  readonly maxDelayMs: number;

  constructor({ retries = 5, backoffMs = 250, maxDelayMs = 30_000 }: RetryOptions = {}) {
    this.retries = retries;
    this.backoffMs = backoffMs;
    this.maxDelayMs = maxDelayMs;
  }

  /** The wait before attempt `attempt + 1`: `min(maxDelayMs, max(retryAfterMs, backoffMs · 2^attempt · u))`,
   *  u uniform in [0.5, 1) (jitter, so that clients that failed together do not retry together). */
  delayMs(attempt: number, retryAfter?: number, random: () => number = Math.random): number {
    const exponential = this.backoffMs * 2 ** attempt * (0.5 + 0.5 * random());
    return Math.min(this.maxDelayMs, Math.max(retryAfter ?? 0, exponential));
  }
}

export interface RetryOptions {
  retries?: number;
  backoffMs?: number;
  maxDelayMs?: number;
}

/** Answers that say "not now" or "failed on the way"; 408 (a wait that timed out) is an answer. */
export const RETRIED_STATUSES: ReadonlySet<number> = new Set([429, 500, 502, 503, 504]);

export type Fetch = (input: Request) => Promise<Response>;

export interface TransportOptions {
  /** Per attempt, until the answer's body is in (default 30 s). */
  timeoutMs?: number;
  retry?: RetryOptions;
  /** Sent with every request (the client's `User-Agent`, `X-API-Key`, …). */
  headers?: Record<string, string>;
  /** The fetch that sends each attempt (default: the global one); for tests and special networks. */
  fetch?: Fetch;
}

/** What one logical call may change about its attempts, and what they saw. */
export interface Call {
  /** This call's timeout per attempt, if not the transport's (a long wait for a step). */
  timeoutMs?: number;
  /** Attempts after the first, if not the policy's (0: one attempt only). */
  retries?: number;
  /** An abort signal of the caller's: not retried. */
  signal?: AbortSignal;
  /** Set when an attempt got no answer: a later 404 to a DELETE then means the first one did it. */
  lostAnswer?: boolean;
}

export class Transport {
  readonly api: ApiClient;
  readonly retry: RetryPolicy;
  readonly timeoutMs: number;
  private readonly fetchAttempt: Fetch;

  constructor(
    readonly url: string,
    options: TransportOptions = {},
  ) {
    this.retry = new RetryPolicy(options.retry);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.fetchAttempt = options.fetch ?? ((request) => globalThis.fetch(request));
    this.api = createClient<paths>({
      baseUrl: url.replace(/\/+$/, ""),
      headers: options.headers,
      fetch: (request) => this.send(request),
    });
  }

  /** The fetch of one call (pass it as openapi-fetch's per-request `fetch`). */
  fetchFor(call: Call): Fetch {
    return (request) => this.send(request, call);
  }

  /**
   * Send `request` by the retry rule; the last answer, its body read in full (so a connection
   * lost while the body streams is retried too). Throws `ConnectionFailed` when no attempt got
   * an answer, and the caller's own abort as it is.
   */
  async send(request: Request, call: Call = {}): Promise<Response> {
    const body = request.body === null ? undefined : await request.arrayBuffer();
    const headers = new Headers(request.headers);
    if ((request.method === "POST" || request.method === "PATCH") && !headers.has("idempotency-key")) {
      headers.set("Idempotency-Key", crypto.randomUUID());
    }
    for (let attempt = 0; ; attempt++) {
      const last = attempt >= (call.retries ?? this.retry.retries);
      let response: Response;
      try {
        const signal = this.attemptSignal(call);
        const init: RequestInit = { method: request.method, headers, body, signal, redirect: request.redirect };
        response = await read(await this.fetchAttempt(new Request(request.url, init)));
      } catch (error) {
        if (call.signal?.aborted || !isTransient(error)) throw error;
        if (last) {
          throw new ConnectionFailed(
            `${request.method} ${new URL(request.url).pathname}: no answer after ${attempt + 1} attempts: ${describe(error)}`,
            { cause: error },
          );
        }
        call.lostAnswer = true;
        await sleep(this.retry.delayMs(attempt), call.signal);
        continue;
      }
      if (!RETRIED_STATUSES.has(response.status) || last) return response;
      await sleep(this.retry.delayMs(attempt, retryAfterMs(response.headers)), call.signal);
    }
  }

  private attemptSignal(call: Call): AbortSignal {
    const timeout = AbortSignal.timeout(call.timeoutMs ?? this.timeoutMs);
    return call.signal ? AbortSignal.any([timeout, call.signal]) : timeout;
  }
}

/** The answer with its body read in full, as a new Response (headers and status kept). */
async function read(response: Response): Promise<Response> {
  const nullBody = response.status === 204 || response.status === 205 || response.status === 304;
  const body = nullBody ? null : await response.arrayBuffer();
  return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
}

/**
 * Network errors and timeouts. fetch reports a network error (refused, reset, closed mid-answer)
 * as a `TypeError` and a timeout of its signal as a `TimeoutError`; anything else (a bad URL is
 * refused before any attempt) is the request's own fault.
 */
function isTransient(error: unknown): boolean {
  return error instanceof TypeError || (error instanceof DOMException && error.name === "TimeoutError");
}

function describe(error: unknown): string {
  const cause = (error as { cause?: unknown }).cause;
  const message = error instanceof Error ? error.message : String(error);
  return cause instanceof Error ? `${message} (${cause.message})` : message;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}
