/**
 * The binary form against the Python side: files this module writes are byte for byte what the
 * server writes for the same tensors, and the reference `safetensors` library reads them; files
 * that library writes read back exactly; views, not copies, where alignment allows.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decodeSafetensors, encodeSafetensors, SafetensorsError } from "../src/index.js";
import { python } from "./support.js";

const w = Float32Array.from([0.1, -0.2, 3.5e-38, -0, 1e30, -Infinity]);
const b = Float64Array.from([Math.PI]);
const steps = BigInt64Array.of(42n);
const TENSORS = {
  w: { data: w, shape: [2, 3] },
  b: { data: b, shape: [] },
  "step/w": { data: steps, shape: [] },
};
const METADATA = { loss: "0.42", note: "θ ← θ − η·m" };

/** Python that rebuilds TENSORS in numpy (float32 values from their exact bits). */
const NUMPY_TENSORS = `
import numpy as np
w = np.frombuffer(bytes.fromhex("${Buffer.from(w.buffer).toString("hex")}"), "<f4").reshape(2, 3)
arrays = {"w": w, "b": np.array(${Math.PI!.toString()}, dtype=np.float64), "step/w": np.array(42, dtype=np.int64)}
metadata = {"loss": "0.42", "note": "θ ← θ − η·m"}
`;

describe("safetensors", () => {
  test("a file written here is byte for byte the server's writer's", () => {
    const ours = encodeSafetensors(TENSORS, METADATA);
    const theirs = python(
      `${NUMPY_TENSORS}\nimport sys\nfrom app.tensors import tensors_to_safetensors\nsys.stdout.write(tensors_to_safetensors(arrays, metadata).hex())`,
    );
    assert.equal(Buffer.from(ours).toString("hex"), theirs);
  });

  test("the safetensors library reads a file written here", () => {
    const file = encodeSafetensors(TENSORS, METADATA);
    const report = JSON.parse(
      python(
        `
import json, sys
from safetensors.numpy import load
data = sys.stdin.buffer.read()
arrays = load(data)
header_length = int.from_bytes(data[:8], "little")
header = json.loads(data[8 : 8 + header_length])
print(json.dumps({
    "names": sorted(arrays),
    "w": arrays["w"].astype(float).reshape(-1).tolist(), "w_shape": list(arrays["w"].shape), "w_dtype": str(arrays["w"].dtype),
    "b": float(arrays["b"]), "b_dtype": str(arrays["b"].dtype), "b_shape": list(arrays["b"].shape),
    "step": int(arrays["step/w"]), "step_dtype": str(arrays["step/w"].dtype),
    "metadata": header["__metadata__"],
}, allow_nan=True))`,
        file,
      ).replace(/-Infinity/g, '"-Infinity"'),
    );
    assert.deepEqual(report.names, ["b", "step/w", "w"]);
    assert.equal(report.w_dtype, "float32");
    assert.deepEqual(report.w_shape, [2, 3]);
    assert.deepEqual(report.w.slice(0, 5), Array.from(w.slice(0, 5)));
    assert.equal(report.w[5], "-Infinity");
    assert.equal(report.b, Math.PI);
    assert.equal(report.b_dtype, "float64");
    assert.deepEqual(report.b_shape, []);
    assert.equal(report.step, 42);
    assert.equal(report.step_dtype, "int64");
    assert.deepEqual(report.metadata, METADATA);
  });

  test("a file the safetensors library writes reads back exactly, as views of the body", () => {
    const hex = python(
      `${NUMPY_TENSORS}\nimport sys\nfrom safetensors.numpy import save\nsys.stdout.write(save(arrays, metadata).hex())`,
    );
    const body = new Uint8Array(Buffer.from(hex, "hex"));
    const { tensors, metadata } = decodeSafetensors(body);
    assert.deepEqual(metadata, METADATA);
    assert.deepEqual(Object.keys(tensors).sort(), ["b", "step/w", "w"]);
    assert.equal(tensors.w!.dtype, "F32");
    assert.deepEqual(tensors.w!.shape, [2, 3]);
    assert.ok(tensors.w!.data instanceof Float32Array);
    assert.deepEqual(new Uint8Array(tensors.w!.data.buffer, tensors.w!.data.byteOffset, 24), new Uint8Array(w.buffer));
    assert.ok(Object.is(tensors.w!.data[3], -0));
    assert.deepEqual(tensors.b, { dtype: "F64", shape: [], data: Float64Array.of(Math.PI) });
    assert.deepEqual(tensors["step/w"], { dtype: "I64", shape: [], data: BigInt64Array.of(42n) });
    for (const { data } of Object.values(tensors)) assert.equal(data.buffer, body.buffer, "a view, not a copy");
  });

  test("a body at an offset that misaligns the elements is read through a copy", () => {
    const file = encodeSafetensors(TENSORS, METADATA);
    const shifted = new Uint8Array(file.length + 1);
    shifted.set(file, 1);
    const { tensors } = decodeSafetensors(shifted.subarray(1));
    assert.notEqual(tensors.b!.data.buffer, shifted.buffer);
    assert.deepEqual(tensors.b!.data, Float64Array.of(Math.PI));
    assert.deepEqual(tensors.w!.data, w);
  });

  test("changing a view changes the body: an answer is used in place", () => {
    const file = encodeSafetensors({ x: { data: Float32Array.of(1, 2), shape: [2] } });
    const { tensors } = decodeSafetensors(file);
    (tensors.x!.data as Float32Array)[0] = 5;
    assert.deepEqual(decodeSafetensors(file).tensors.x!.data, Float32Array.of(5, 2));
  });

  test("the header is padded with spaces to 8 bytes", () => {
    const file = encodeSafetensors({ x: { data: Float64Array.of(1), shape: [1] } });
    const length = Number(new DataView(file.buffer).getBigUint64(0, true));
    assert.equal(length % 8, 0);
    assert.match(new TextDecoder().decode(file.subarray(8, 8 + length)), /^\{.*\} *$/);
  });

  const malformed: [string, Uint8Array][] = [
    ["shorter than 8 bytes", new Uint8Array(3)],
    ["a header length past the end", lengthOnly(1000n, 16)],
    ["a header that is not JSON", withHeader("{nope")],
    ["a header that is a list", withHeader("[]")],
    ["offsets that leave a gap", withHeader('{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8)],
    ["data left over", withHeader('{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 8)],
    ["a shape that does not fit the offsets", withHeader('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', 4)],
    ["a dtype this client does not read", withHeader('{"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}', 4)],
    ["metadata that is not text", withHeader('{"__metadata__":{"a":1}}')],
  ];
  for (const [what, body] of malformed) {
    test(`refused: ${what}`, () => {
      assert.throws(() => decodeSafetensors(body), SafetensorsError);
    });
  }

  test("a shape that does not hold the data is refused when writing", () => {
    assert.throws(() => encodeSafetensors({ x: { data: Float32Array.of(1, 2), shape: [3] } }), RangeError);
  });
});

function lengthOnly(length: bigint, size: number): Uint8Array {
  const file = new Uint8Array(size);
  new DataView(file.buffer).setBigUint64(0, length, true);
  return file;
}

function withHeader(header: string, dataBytes = 0): Uint8Array {
  const text = new TextEncoder().encode(header);
  const file = new Uint8Array(8 + text.length + dataBytes);
  new DataView(file.buffer).setBigUint64(0, BigInt(text.length), true);
  file.set(text, 8);
  return file;
}
