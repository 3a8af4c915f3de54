/**
 * RemoteOptimizer against the live server: named typed arrays updated in place, partial steps,
 * safetensors from the size threshold on (seen on the wire through a proxy), and a run continued
 * from its state dict.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { RemoteOptimizer, type Tensor, tensor } from "../src/index.js";
import { client, isStep, Proxy } from "./support.js";

const SAFETENSORS = "application/vnd.safetensors";

describe("RemoteOptimizer", () => {
  test("step writes θ_{t+1} into the caller's own arrays", async () => {
    const w = Float64Array.of(1, 2, 3, 4);
    const b = Float64Array.of(0.5);
    const optimizer = await RemoteOptimizer.create(
      client(),
      { w: tensor(w, [2, 2]), b },
      {
        optimizer: { type: "sgd", lr: 0.1, momentum: 0.5 },
      },
    );
    try {
      assert.equal(optimizer.session.dtype, "float64");
      assert.equal(optimizer.params.w!.data, w, "the same array, not a copy");
      const info = await optimizer.step({ w: Float64Array.of(1, 1, 1, 1), b: Float64Array.of(2) }, { loss: 1 });
      assert.equal(info.step, 1);
      assert.equal(info.lr, 0.1);
      assert.deepEqual(w, Float64Array.of(0.9, 1.9, 2.9, 3.9));
      assert.deepEqual(b, Float64Array.of(0.5 - 0.2));
      await optimizer.step({ w: Float64Array.of(1, 1, 1, 1), b: Float64Array.of(2) });
      // momentum: buf = 0.5·1 + 1 = 1.5, so θ −= 0.15
      assert.deepEqual(
        w,
        Float64Array.from([0.9, 1.9, 2.9, 3.9], (value) => value - 0.1 * 1.5),
      );
      assert.equal(optimizer.stepCount, 2);
    } finally {
      await optimizer.session.delete();
    }
  });

  for (const binaryThreshold of [null, 1]) {
    const form = binaryThreshold === null ? "JSON" : "safetensors";
    test(`a gradient for some tensors is a partial step: the others stay as they are (${form})`, async () => {
      const w = Float32Array.of(1, 1);
      const b = Float32Array.of(5);
      const optaas = client({ binaryThreshold });
      const optimizer = await RemoteOptimizer.create(optaas, { w, b }, { optimizer: { type: "adam", lr: 0.1 } });
      try {
        await optimizer.step({ w: Float32Array.of(1, -1) });
        assert.deepEqual(b, Float32Array.of(5));
        assert.ok(Math.abs(w[0]! - 0.9) < 1e-6 && Math.abs(w[1]! - 1.1) < 1e-6, String(w));
        const exported = await optimizer.stateDict();
        assert.equal(exported.state.w!.step, 1);
        assert.equal(exported.state.b!.step, 0, "b's state was not touched");
      } finally {
        await optimizer.session.delete();
      }
    });
  }

  test("from the binary threshold on, tensors travel as safetensors both ways", async () => {
    const proxy = await Proxy.start();
    const big = new Float32Array(300).fill(1);
    const optimizer = await RemoteOptimizer.create(
      client({ url: proxy.url, binaryThreshold: 256 }),
      { big: tensor(big, [10, 30]) },
      { optimizer: { type: "sgd", lr: 0.25 } },
    );
    try {
      const mark = proxy.seen.length;
      await optimizer.step({ big: new Float32Array(300).fill(2) });
      const [request] = proxy.seen.slice(mark).filter(isStep);
      assert.equal(request?.contentType, SAFETENSORS);
      assert.ok(request?.accept?.startsWith(SAFETENSORS));
      assert.deepEqual(big, new Float32Array(300).fill(0.5));
      assert.equal(optimizer.lr, 0.25);
    } finally {
      await optimizer.session.delete();
      await proxy.close();
    }
  });

  test("below the threshold, JSON", async () => {
    const proxy = await Proxy.start();
    const optimizer = await RemoteOptimizer.create(
      client({ url: proxy.url, binaryThreshold: 256 }),
      { small: new Float32Array(255) },
      { optimizer: "sgd" },
    );
    try {
      const mark = proxy.seen.length;
      await optimizer.step({ small: new Float32Array(255) });
      assert.equal(proxy.seen.slice(mark).filter(isStep)[0]?.contentType, "application/json");
    } finally {
      await optimizer.session.delete();
      await proxy.close();
    }
  });

  test("a state dict continues the run in a new session, θ copied into the arrays", async () => {
    const optaas = client();
    const x = Float64Array.of(3, -2);
    const optimizer = await RemoteOptimizer.create(optaas, { x }, { optimizer: { type: "adam", lr: 0.1 } });
    const twin = await RemoteOptimizer.create(
      optaas,
      { x: Float64Array.from(x) },
      { optimizer: { type: "adam", lr: 0.1 } },
    );
    const first = optimizer.session;
    try {
      for (let t = 0; t < 3; t++) {
        await optimizer.step({ x: Float64Array.from(x) }); // ∇ of ½‖x‖²
        await twin.step({ x: Float64Array.from(twin.params.x!.data) });
      }
      const saved = await optimizer.stateDict();
      const afterThree = Float64Array.from(x);
      await optimizer.step({ x: Float64Array.of(100, 100) }); // a step to be undone by the load
      await optimizer.loadStateDict(saved);
      assert.notEqual(optimizer.session.id, first.id);
      assert.deepEqual(x, afterThree);
      await optimizer.step({ x: Float64Array.from(x) });
      await twin.step({ x: Float64Array.from(twin.params.x!.data) });
      assert.deepEqual(x, (twin.params.x as Tensor).data);
      assert.equal(optimizer.stepCount, 4);
    } finally {
      await first.delete();
      if (optimizer.session !== first) await optimizer.session.delete();
      await twin.session.delete();
    }
  });

  test("attaching to a session of other shapes is refused", async () => {
    const optaas = client();
    const session = await optaas.createSession({ params: { x: new Float64Array(3) }, optimizer: "sgd" });
    try {
      await assert.rejects(RemoteOptimizer.attach(session, { x: new Float64Array(4) }), TypeError);
      const x = Float64Array.of(9, 9, 9);
      await RemoteOptimizer.attach(session, { x });
      assert.deepEqual(x, new Float64Array(3), "θ copied in");
    } finally {
      await session.delete();
    }
  });
});
