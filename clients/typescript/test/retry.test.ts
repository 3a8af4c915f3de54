/**
 * The retry rule, through a real proxy in front of the live server: a step whose answer is lost
 * after the server applied it is retried with the same Idempotency-Key and applied once; 503 and
 * 429 are waited out (Retry-After as a lower bound); a timeout is retried; an unreachable server
 * is ConnectionFailed after the retries; 4xx answers are not retried.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  type Client,
  ConnectionFailed,
  RetryPolicy,
  ServiceUnavailable,
  type Session,
  ShapeMismatch,
  type StepResult,
} from "../src/index.js";
import { freePort } from "./live-server.js";
import { client, isStep, Proxy, type SeenRequest, serverUrl } from "./support.js";

describe("RetryPolicy", () => {
  const policy = new RetryPolicy({ retries: 5, backoffMs: 100, maxDelayMs: 1000 });

  test("the delay doubles per attempt, with jitter in [0.5, 1)", () => {
    assert.equal(
      policy.delayMs(0, undefined, () => 0),
      50,
    );
    assert.equal(
      policy.delayMs(1, undefined, () => 0.5),
      150,
    );
    assert.equal(
      policy.delayMs(2, undefined, () => 0),
      200,
    );
    assert.equal(
      policy.delayMs(3, undefined, () => 1 - 2 ** -52),
      800 - 800 * 2 ** -53,
    );
  });

  test("Retry-After is a lower bound, maxDelayMs the upper one", () => {
    assert.equal(
      policy.delayMs(0, 700, () => 0),
      700,
    );
    assert.equal(
      policy.delayMs(2, 100, () => 0.5),
      300,
    );
    assert.equal(
      policy.delayMs(10, undefined, () => 0.5),
      1000,
    );
    assert.equal(
      policy.delayMs(0, 5000, () => 0),
      1000,
    );
  });

  test("the defaults are the Python client's: 5 retries from 250 ms, at most 30 s", () => {
    assert.deepEqual({ ...new RetryPolicy() }, { retries: 5, backoffMs: 250, maxDelayMs: 30_000 });
  });
});

describe("retries through a proxy", () => {
  let proxy: Proxy;
  let viaProxy: Client;
  let session: Session;

  before(async () => {
    proxy = await Proxy.start();
    viaProxy = client({ url: proxy.url, timeoutMs: 3000 });
    session = await viaProxy.createSession({ params: Float64Array.of(1, 2), optimizer: { type: "sgd", lr: 0.5 } });
  });
  after(async () => {
    await session?.delete();
    await proxy?.close();
  });

  function stepsSeen(from: number): SeenRequest[] {
    return proxy.seen.slice(from).filter(isStep);
  }

  for (const binary of [false, true]) {
    test(`a step whose answer is lost is applied once (${binary ? "safetensors" : "JSON"})`, async () => {
      const before = (await session.info()).step;
      const mark = proxy.seen.length;
      proxy.plan(isStep, { kind: "drop-answer" });
      const result = (await session.step(Float64Array.of(1, 1), { binary })) as StepResult;
      const attempts = stepsSeen(mark);
      assert.equal(attempts.length, 2, "the lost answer, then the retry");
      assert.ok(attempts[0]!.idempotencyKey !== undefined && attempts[0]!.idempotencyKey.length > 0);
      assert.equal(attempts[1]!.idempotencyKey, attempts[0]!.idempotencyKey, "one key for the call");
      assert.equal(result.replayed, true, "the kept answer");
      assert.equal(result.step, before + 1);
      const view = await session.info();
      assert.equal(view.step, before + 1, "applied once");
      const history = await session.history({ after: 0 });
      assert.equal(history.filter((record) => record.kind === "step").length, before + 1);
      assert.deepEqual(await session.params(), result.params);
    });
  }

  test("the replayed answer says so (Idempotent-Replayed)", async () => {
    proxy.plan(isStep, { kind: "drop-answer" });
    const result = (await session.step(Float64Array.of(0, 0))) as StepResult;
    assert.equal(result.replayed, true);
    const fresh = (await session.step(Float64Array.of(0, 0))) as StepResult;
    assert.equal(fresh.replayed, false);
  });

  test("each call has its own key", async () => {
    const mark = proxy.seen.length;
    await session.step(Float64Array.of(0, 0));
    await session.step(Float64Array.of(0, 0));
    const keys = stepsSeen(mark).map((request) => request.idempotencyKey);
    assert.equal(new Set(keys).size, 2);
  });

  test("503 with Retry-After is waited out (at least Retry-After), with the same key", async () => {
    const before = (await session.info()).step;
    const mark = proxy.seen.length;
    proxy.plan(isStep, {
      kind: "answer",
      status: 503,
      headers: { "Retry-After": "1", "Content-Type": "application/problem+json" },
      body: JSON.stringify({ type: "/problems/lock-timeout", title: "Busy", status: 503, detail: "try again" }),
    });
    const started = performance.now();
    await session.step(Float64Array.of(1, 1));
    const waited = performance.now() - started;
    assert.ok(waited >= 1000, `waited ${waited} ms; Retry-After said 1 s`);
    const attempts = stepsSeen(mark);
    assert.equal(attempts.length, 2);
    assert.equal(attempts[1]!.idempotencyKey, attempts[0]!.idempotencyKey);
    assert.equal((await session.info()).step, before + 1);
  });

  test("429 and 502 are retried too", async () => {
    const mark = proxy.seen.length;
    proxy.plan(isStep, { kind: "answer", status: 429, headers: { "Retry-After": "0" } });
    proxy.plan(isStep, { kind: "answer", status: 502, body: "bad gateway" });
    await session.step(Float64Array.of(1, 1));
    assert.equal(stepsSeen(mark).length, 3);
  });

  test("503 on every attempt is ServiceUnavailable with its Retry-After", async () => {
    const policy = client({ url: proxy.url, retry: { retries: 2, backoffMs: 1, maxDelayMs: 10 } });
    const handle = await policy.session(session.id, session.token);
    const busy = { kind: "answer", status: 503, headers: { "Retry-After": "0" } } as const;
    for (let i = 0; i < 3; i++) proxy.plan(isStep, busy);
    const error = await handle.step(Float64Array.of(1, 1)).catch((caught: unknown) => caught);
    assert.ok(error instanceof ServiceUnavailable, String(error));
    assert.equal(error.retryAfterMs, 0);
  });

  test("an answer slower than the timeout is retried, and the step applied once", async () => {
    const before = (await session.info()).step;
    const mark = proxy.seen.length;
    proxy.plan(isStep, { kind: "delay-answer", ms: 4000 }); // the client's timeout is 3 s
    const result = (await session.step(Float64Array.of(1, 1))) as StepResult;
    const attempts = stepsSeen(mark);
    assert.equal(attempts.length, 2);
    assert.equal(attempts[1]!.idempotencyKey, attempts[0]!.idempotencyKey);
    assert.equal(result.step, before + 1);
    assert.equal((await session.info()).step, before + 1);
  });

  test("a 4xx answer is not retried", async () => {
    const mark = proxy.seen.length;
    await assert.rejects(session.step(Float64Array.of(1, 1, 1)), ShapeMismatch);
    assert.equal(stepsSeen(mark).length, 1);
  });

  test("a DELETE whose answer is lost has still deleted the session", async () => {
    const doomed = await viaProxy.createSession({ params: Float64Array.of(1), optimizer: "sgd" });
    proxy.plan((request) => request.method === "DELETE", { kind: "drop-answer" });
    await doomed.delete();
    assert.equal(
      proxy.seen.filter((request) => request.method === "DELETE" && request.path.endsWith(doomed.id)).length,
      2,
    );
  });

  test("a lost answer to a creation gives one session, not two", async () => {
    const before = await storedSessions();
    const mark = proxy.seen.length;
    proxy.plan((request) => request.method === "POST" && request.path === "/v1/sessions", { kind: "drop-answer" });
    const created = await viaProxy.createSession({ params: Float64Array.of(1), optimizer: "sgd" });
    try {
      const posts = proxy.seen.slice(mark).filter((request) => request.path === "/v1/sessions");
      assert.equal(posts.length, 2);
      assert.equal(posts[1]!.idempotencyKey, posts[0]!.idempotencyKey);
      assert.equal(created.stepCount, 0);
      assert.equal(await storedSessions(), before + 1);
    } finally {
      await created.delete();
    }
  });
});

/** The server's `optaas_sessions` gauge (the test files run one at a time: see test/run.ts). */
async function storedSessions(): Promise<number> {
  const text = await (await fetch(`${serverUrl()}/metrics`)).text();
  const line = text.split("\n").find((entry) => entry.startsWith("optaas_sessions "));
  assert.ok(line !== undefined, "the metrics show optaas_sessions");
  return Number(line.split(" ")[1]);
}

test("an unreachable server is ConnectionFailed after the retries", async () => {
  const nobody = client({
    url: `http://127.0.0.1:${await freePort()}`,
    retry: { retries: 2, backoffMs: 1, maxDelayMs: 5 },
  });
  const error = await nobody
    .createSession({ params: Float64Array.of(1), optimizer: "sgd" })
    .catch((caught: unknown) => caught);
  assert.ok(error instanceof ConnectionFailed, String(error));
  assert.match(error.message, /no answer after 3 attempts/);
  assert.equal(await nobody.ready(), false);
});

test("the caller's abort is not retried", async () => {
  const optaas = client();
  const session = await optaas.createSession({ params: Float64Array.of(1), optimizer: "sgd" });
  try {
    const controller = new AbortController();
    controller.abort(new Error("stop"));
    await assert.rejects(session.step(Float64Array.of(1), { signal: controller.signal }), /stop/);
    assert.equal((await session.info()).step, 0);
  } finally {
    await session.delete();
  }
});
