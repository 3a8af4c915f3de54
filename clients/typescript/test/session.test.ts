/**
 * Sessions against the live server: create, step (JSON and safetensors, both ways), the numbers
 * against torch's formulas computed here in float64, reading, changing, forking, exporting and
 * importing, and the typed errors.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ApiError,
  AuthenticationRequired,
  type Export,
  InvalidContent,
  NonFiniteGradient,
  type Params,
  PreconditionFailed,
  Session,
  SessionNotFound,
  ShapeMismatch,
  type StepResult,
  type Tensor,
  tensor,
  unwrap,
  ValidationFailed,
} from "../src/index.js";
import { client, Proxy, relativeError } from "./support.js";

const optaas = client();

/** A fixed, varied gradient for step t (no randomness: failures reproduce). */
function gradientAt(t: number, size: number): Float64Array {
  return Float64Array.from({ length: size }, (_, i) => Math.sin(1.3 * t + 0.7 * i) * (1 + (i % 3)) + 0.05 * t);
}

async function applied(outcome: Promise<StepResult | { kind: "pending" }>): Promise<StepResult> {
  const result = await outcome;
  assert.equal(result.kind, "step");
  return result as StepResult;
}

function data(params: Params | undefined, name?: string): Float32Array | Float64Array {
  assert.ok(params !== undefined);
  const found = name === undefined ? (params as Tensor) : (params as Record<string, Tensor>)[name];
  assert.ok(found !== undefined);
  return found.data;
}

describe("create and read", () => {
  test("the server is ready", async () => {
    assert.equal(await optaas.ready(), true);
  });

  test("a schedule previewed at an optimizer's lr", async () => {
    const schedule = { type: "exponential" as const, gamma: 0.5 };
    assert.deepEqual([...(await optaas.previewSchedule(schedule, { steps: 3, lr: 0.2 }))], [0.2, 0.1, 0.05]);
    // Without lr, the optimizer's: Muon's default 1e-3, or the spec's own.
    assert.deepEqual([...(await optaas.previewSchedule(schedule, { steps: 2, optimizer: "muon" }))], [1e-3, 5e-4]);
    const prodigy = { type: "prodigy" as const, lr: 0.5 };
    assert.deepEqual([...(await optaas.previewSchedule(schedule, { steps: 2, optimizer: prodigy }))], [0.5, 0.25]);
  });

  test("a named float64 session keeps names, shapes, dtype and every default", async () => {
    const session = await optaas.createSession({
      params: { w: tensor(Float64Array.of(0.1, -0.2, 0.3, 0), [2, 2]), b: Float64Array.of(0, 0) },
      optimizer: "adam",
      name: "ts-create",
    });
    try {
      assert.equal(session.layout, "named");
      assert.equal(session.dtype, "float64");
      assert.deepEqual(session.shapes, { w: [2, 2], b: [2] });
      assert.equal(session.stepCount, 0);
      const view = await session.info();
      assert.equal(view.name, "ts-create");
      assert.deepEqual(view.optimizer, {
        type: "adam",
        lr: 0.001,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0,
        amsgrad: false,
        decoupled_weight_decay: false,
        maximize: false,
      });
      const params = (await session.params()) as Record<string, Tensor>;
      assert.deepEqual(params.w, { data: Float64Array.of(0.1, -0.2, 0.3, 0), shape: [2, 2] });
      assert.deepEqual(params.b, { data: Float64Array.of(0, 0), shape: [2] });
    } finally {
      await session.delete();
    }
  });

  test("a single-form float32 session answers with one tensor, every float32 exact", async () => {
    const theta = Float32Array.of(0.1, 1 / 3, -7.25e-5, 3e38);
    const session = await optaas.createSession({ params: theta, optimizer: { type: "sgd", lr: 0.5 } });
    try {
      assert.equal(session.layout, "single");
      assert.equal(session.dtype, "float32");
      assert.deepEqual(await session.params(), { data: theta, shape: [4] });
      assert.deepEqual(await session.params({ binary: true }), { data: theta, shape: [4] });
      const step = await applied(session.step(Float32Array.of(1, 1, 1, 1)));
      const expected = theta.map((value) => Math.fround(value - 0.5)); // float32 arithmetic
      assert.deepEqual(step.params, { data: expected, shape: [4] });
    } finally {
      await session.delete();
    }
  });

  test("an existing session is attached by id and token", async () => {
    const created = await optaas.createSession({ params: Float64Array.of(1, 2), optimizer: "sgd" });
    try {
      const attached = await optaas.session(created.id, created.token);
      assert.equal(attached.stepCount, 0);
      assert.deepEqual(attached.shapes, { params: [2] });
      await assert.rejects(optaas.session(created.id, "not-the-token"), SessionNotFound);
    } finally {
      await created.delete();
    }
  });
});

describe("the numbers", () => {
  test("SGD with momentum in float64 is torch's rule, bit for bit", async () => {
    const [lr, momentum, size, steps] = [0.05, 0.9, 7, 25];
    const theta = Float64Array.from({ length: size }, (_, i) => 0.5 - 0.1 * i);
    const session = await optaas.createSession({ params: theta, optimizer: { type: "sgd", lr, momentum } });
    try {
      const reference = Float64Array.from(theta);
      const buffer = new Float64Array(size);
      let answered: Float32Array | Float64Array = theta;
      for (let t = 0; t < steps; t++) {
        const g = gradientAt(t, size);
        for (let i = 0; i < size; i++) {
          buffer[i] = t === 0 ? g[i]! : buffer[i]! * momentum + g[i]!; // torch: buf = g, then μ·buf + g
          reference[i] = reference[i]! - lr * buffer[i]!;
        }
        answered = data((await applied(session.step(g))).params);
      }
      assert.equal(session.stepCount, steps);
      assert.deepEqual(displacement(answered, theta), displacement(reference, theta));
    } finally {
      await session.delete();
    }
  });

  test("Adam in float64 agrees with torch's formula to 1e-12 (relative, on θ − θ₀)", async () => {
    const [lr, beta1, beta2, eps, size, steps] = [0.01, 0.9, 0.999, 1e-8, 5, 40];
    const theta = Float64Array.from({ length: size }, (_, i) => 1 - 0.3 * i);
    const session = await optaas.createSession({
      params: { x: theta },
      optimizer: { type: "adam", lr, betas: [beta1, beta2], eps },
    });
    try {
      const reference = Float64Array.from(theta);
      const m = new Float64Array(size);
      const v = new Float64Array(size);
      let answered: Float32Array | Float64Array = theta;
      for (let t = 1; t <= steps; t++) {
        const g = gradientAt(t, size);
        const stepSize = lr / (1 - beta1 ** t);
        const bias2Sqrt = Math.sqrt(1 - beta2 ** t);
        for (let i = 0; i < size; i++) {
          m[i] = m[i]! + (1 - beta1) * (g[i]! - m[i]!);
          v[i] = v[i]! * beta2 + (1 - beta2) * g[i]! * g[i]!;
          reference[i] = reference[i]! - (stepSize * m[i]!) / (Math.sqrt(v[i]!) / bias2Sqrt + eps);
        }
        const result = await applied(session.step({ x: g }, { loss: t }));
        assert.equal(result.lr, lr);
        answered = data(result.params, "x");
      }
      assert.ok(relativeError(displacement(answered, theta), displacement(reference, theta)) < 1e-12);
    } finally {
      await session.delete();
    }
  });

  test("float32: JSON, safetensors and the two mixed give the same bits", async () => {
    const theta = Float32Array.from({ length: 12 }, (_, i) => Math.cos(i));
    const ways = [
      { binary: false, name: "JSON in, JSON out" },
      { binary: true, name: "safetensors in, safetensors out" },
    ];
    const sessions = await Promise.all(
      ways.map(() =>
        optaas.createSession({ params: { w: tensor(theta, [3, 4]) }, optimizer: { type: "adam", lr: 0.01 } }),
      ),
    );
    const proxy = await Proxy.start();
    const viaProxy = client({ url: proxy.url });
    try {
      let answers: Float32Array[] = [];
      for (let t = 0; t < 5; t++) {
        const g = Float32Array.from(gradientAt(t, 12));
        answers = [];
        for (const [index, way] of ways.entries()) {
          const result = await applied(sessions[index]!.step({ w: g }, { binary: way.binary, loss: 0.5 }));
          assert.equal(result.step, t + 1);
          answers.push(data(result.params, "w") as Float32Array);
        }
        assert.deepEqual(answers[1], answers[0], `step ${t + 1}`);
      }
      // The mixed ways, through a proxy that shows what went over the wire.
      const mixed = await viaProxy.session(sessions[0]!.id, sessions[0]!.token);
      const after = await mixed.params({ binary: true });
      assert.equal(proxy.seen.at(-1)!.accept?.split(",")[0], "application/vnd.safetensors");
      assert.deepEqual(data(after, "w"), answers[0]);
      const binaryIn = await applied(mixed.step({ w: new Float32Array(12) }, { binary: true, returnParams: false }));
      assert.equal(proxy.seen.at(-1)!.contentType, "application/vnd.safetensors");
      assert.equal(binaryIn.params, undefined);
      assert.equal(binaryIn.step, 6);
      assert.equal(typeof binaryIn.gradNorm, "number", "a JSON answer carries the norms");
    } finally {
      await proxy.close();
      for (const session of sessions) await session.delete();
    }
  });

  test("a binary answer carries step and lr in its metadata; a NaN loss travels as NaN", async () => {
    const session = await optaas.createSession({
      params: Float64Array.of(1, 2, 3),
      optimizer: { type: "sgd", lr: 0.1 },
      schedule: { type: "exponential", gamma: 0.5 },
    });
    try {
      await session.step(Float64Array.of(1, 1, 1), { binary: true, loss: Number.NaN });
      const second = await applied(session.step(Float64Array.of(1, 1, 1), { binary: true, loss: 2 }));
      assert.equal(second.step, 2);
      assert.equal(second.lr, 0.05);
      assert.deepEqual(data(second.params), Float64Array.of(1 - 0.1 - 0.05, 2 - 0.1 - 0.05, 3 - 0.1 - 0.05));
      const history = await session.history();
      assert.deepEqual(
        history.map((record) => (record.kind === "step" ? [record.step, record.lr, record.loss] : record.kind)),
        [
          [1, 0.1, null], // a NaN loss is kept as NaN, shown as null
          [2, 0.05, 2],
        ],
      );
    } finally {
      await session.delete();
    }
  });
});

describe("run management", () => {
  test("patch, fork, history and delete", async () => {
    const session = await optaas.createSession({ params: Float64Array.of(1, 1), optimizer: { type: "sgd", lr: 0.1 } });
    try {
      await session.step(Float64Array.of(1, 2), { loss: 3 });
      const view = await session.patch({ optimizer: { lr: 0.01 } });
      assert.equal(view.optimizer.lr, 0.01);
      assert.equal(view.step, 1);
      const fork = await session.fork({ optimizer: { lr: 1 } });
      try {
        assert.notEqual(fork.id, session.id);
        assert.equal(fork.stepCount, 1);
        const [mine, theirs] = await Promise.all([
          applied(session.step(Float64Array.of(1, 1))),
          applied(fork.step(Float64Array.of(1, 1))),
        ]);
        assert.deepEqual(data(mine.params), Float64Array.of(1 - 0.1 - 0.01, 1 - 0.2 - 0.01));
        assert.deepEqual(data(theirs.params), Float64Array.of(1 - 0.1 - 1, 1 - 0.2 - 1));
      } finally {
        await fork.delete();
      }
      const history = await session.history();
      assert.deepEqual(
        history.map((record) => record.kind),
        ["step", "change", "step"],
      );
      assert.deepEqual(
        (await session.history({ after: 1, limit: 1 })).map((record) => record.seq),
        [2],
      );
    } finally {
      await session.delete();
    }
    await assert.rejects(session.info(), SessionNotFound);
  });

  for (const binary of [false, true]) {
    test(`export and import (${binary ? "safetensors" : "JSON"}) continue the run exactly`, async () => {
      const session = await optaas.createSession({
        params: { w: tensor(Float32Array.of(1, -1, 0.5, 2), [2, 2]), b: Float32Array.of(0.25) },
        optimizer: { type: "adam", lr: 0.05 },
        schedule: { type: "inverse_sqrt" },
      });
      let copy: Session | undefined;
      try {
        const grads = (t: number): Record<string, Float32Array> => ({
          w: Float32Array.from(gradientAt(t, 4)),
          b: Float32Array.of(t - 1.5),
        });
        for (let t = 0; t < 3; t++) await session.step(grads(t), { loss: t });
        const exported: Export = await session.export({ binary });
        assert.equal(exported.step, 3);
        assert.equal(exported.state.w!.step, 3);
        assert.deepEqual((exported.state.w!.exp_avg as Tensor).shape, [2, 2]);
        assert.ok((exported.state.b!.exp_avg_sq as Tensor).data instanceof Float32Array);
        copy = await optaas.importSession(exported, { binary });
        assert.equal(copy.stepCount, 3);
        for (let t = 3; t < 6; t++) {
          const [mine, theirs]: [StepResult, StepResult] = await Promise.all([
            applied(session.step(grads(t))),
            applied(copy.step(grads(t))),
          ]);
          assert.deepEqual(theirs.params, mine.params);
          assert.equal(theirs.lr, mine.lr);
        }
      } finally {
        await copy?.delete();
        await session.delete();
      }
    });
  }

  test("a 202 while accumulating, then the mean applied once K gradients are in", async () => {
    const session = await optaas.createSession({
      params: Float64Array.of(0, 0),
      optimizer: { type: "sgd", lr: 1 },
      accumulate: 2,
    });
    try {
      const first = await session.step(Float64Array.of(1, 3));
      assert.equal(first.kind, "pending");
      if (first.kind !== "pending") return;
      assert.deepEqual([first.step, first.received, first.missing, first.waitForStep], [0, 1, 1, 1]);
      const waited = first.wait({ timeoutS: 20 });
      const second = await applied(session.step(Float64Array.of(3, 5)));
      assert.deepEqual(data(second.params), Float64Array.of(-2, -4));
      assert.deepEqual(data(await waited), Float64Array.of(-2, -4));
    } finally {
      await session.delete();
    }
  });
});

describe("typed errors", () => {
  test("404: an unknown session, and a wrong token, are the same SessionNotFound", async () => {
    const session = await optaas.createSession({ params: Float64Array.of(1), optimizer: "sgd" });
    try {
      const wrong = new Session(optaas, session.id, "not-the-token");
      const error = await wrong.step(Float64Array.of(1)).catch((caught: unknown) => caught);
      assert.ok(error instanceof SessionNotFound);
      assert.equal(error.status, 404);
      assert.equal(error.slug, "session-not-found");
      const unknown = new Session(optaas, "s_unknown", session.token);
      await assert.rejects(unknown.info(), SessionNotFound);
    } finally {
      await session.delete();
    }
  });

  test("401: no token is AuthenticationRequired", async () => {
    const session = await optaas.createSession({ params: Float64Array.of(1), optimizer: "sgd" });
    try {
      const result = await optaas.api.GET("/v1/sessions/{session_id}", {
        params: { path: { session_id: session.id } },
      });
      assert.equal(result.response.status, 401);
      assert.throws(() => unwrap(result), AuthenticationRequired);
    } finally {
      await session.delete();
    }
  });

  test("422: a gradient of the wrong shape is a ShapeMismatch naming the tensor; nothing changes", async () => {
    const session = await optaas.createSession({
      params: { w: tensor(new Float64Array(6), [2, 3]), b: new Float64Array(3) },
      optimizer: "sgd",
    });
    try {
      for (const binary of [false, true]) {
        const error = await session
          .step({ w: tensor(new Float64Array(6), [3, 2]), b: new Float64Array(3) }, { binary })
          .catch((caught: unknown) => caught);
        assert.ok(error instanceof ShapeMismatch, String(error));
        assert.equal(error.tensor, "w");
        assert.deepEqual(error.expectedShape, [2, 3]);
        assert.deepEqual(error.gotShape, [3, 2]);
      }
      assert.equal((await session.info()).step, 0);
    } finally {
      await session.delete();
    }
  });

  test("422: NaN in a gradient is a NonFiniteGradient, in JSON and in safetensors", async () => {
    const session = await optaas.createSession({ params: Float32Array.of(1, 2), optimizer: "sgd" });
    try {
      for (const binary of [false, true]) {
        const error = await session.step(Float32Array.of(1, Number.NaN), { binary }).catch((caught: unknown) => caught);
        assert.ok(error instanceof NonFiniteGradient, String(error));
        assert.equal(error.tensor, "params");
      }
    } finally {
      await session.delete();
    }
  });

  test("422: invalid settings are ValidationFailed with where and why", async () => {
    const error = await optaas
      .createSession({
        params: Float64Array.of(1),
        optimizer: { type: "adam", lr: 0.1, betas: [0.9, 0.999] },
        accumulate: 0,
      })
      .catch((caught: unknown) => caught);
    assert.ok(error instanceof InvalidContent, String(error));
    assert.ok(error instanceof ValidationFailed);
    assert.ok(
      error.errors.some((entry) => entry.loc.includes("accumulate")),
      JSON.stringify(error.errors),
    );
    const unknownType = await optaas
      .createSession({ params: Float64Array.of(1), optimizer: { type: "no-such-optimizer" } as never })
      .catch((caught: unknown) => caught);
    assert.ok(unknownType instanceof ApiError && unknownType.status === 422);
  });

  test("412: If-Match at a step the session has left is PreconditionFailed with the current step", async () => {
    const session = await optaas.createSession({ params: Float64Array.of(1), optimizer: "sgd" });
    try {
      await session.step(Float64Array.of(1), { ifMatch: 0 });
      const error = await session.step(Float64Array.of(1), { ifMatch: 0 }).catch((caught: unknown) => caught);
      assert.ok(error instanceof PreconditionFailed);
      assert.equal(error.currentStep, 1);
    } finally {
      await session.delete();
    }
  });
});

function displacement(theta: ArrayLike<number>, start: ArrayLike<number>): number[] {
  return Array.from(theta, (value, i) => value - start[i]!);
}
