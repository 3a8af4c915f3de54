/**
 * Tensors in TypeScript and on the wire.
 *
 * A tensor is a typed array in row-major (C) order and its shape: `{ data, shape }`, `data` a
 * `Float32Array` or `Float64Array` (the session's dtype). A session's parameters are one tensor
 * (the `single` form, whose tensor the server names `params`) or tensors by name (the `named`
 * form). In JSON a tensor is a number (0-d) or nested arrays whose nesting gives the shape.
 */

export type FloatArray = Float32Array | Float64Array;
export type Dtype = "float32" | "float64";

/** A row-major array and its shape (`[]` for a scalar). */
export interface Tensor<A extends FloatArray = FloatArray> {
  readonly data: A;
  readonly shape: readonly number[];
}

/** A tensor, or a typed array alone (its shape: the session's for that tensor, else 1-D). */
export type TensorInput = Tensor | FloatArray;

/** Parameters or gradients: one tensor (single form) or tensors by name (named form). */
export type TensorsInput = TensorInput | Readonly<Record<string, TensorInput>>;

/** Parameters as the server answers them: in the session's form and dtype. */
export type Params = Tensor | Record<string, Tensor>;

/** The one tensor of a single-form session, by the name the server gives it. */
export const SINGLE_TENSOR_NAME = "params";

/** A tensor of `data` with `shape` (default: 1-D); the element count must agree. */
export function tensor<A extends FloatArray>(data: A, shape?: readonly number[]): Tensor<A> {
  const dims = shape ?? [data.length];
  if (elementCount(dims) !== data.length) {
    throw new RangeError(`shape [${dims.join(", ")}] holds ${elementCount(dims)} elements, not ${data.length}`);
  }
  return { data, shape: [...dims] };
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((count, size) => count * size, 1);
}

export function isFloatArray(value: unknown): value is FloatArray {
  return value instanceof Float32Array || value instanceof Float64Array;
}

function isTensor(value: unknown): value is Tensor {
  return (
    typeof value === "object" &&
    value !== null &&
    isFloatArray((value as Tensor).data) &&
    Array.isArray((value as Tensor).shape)
  );
}

/** Whether `value` is the single form (one tensor) rather than tensors by name. */
export function isSingle(value: TensorsInput): value is TensorInput {
  return isFloatArray(value) || isTensor(value);
}

/** The array type of a dtype. */
export function arrayOf(dtype: Dtype): Float32ArrayConstructor | Float64ArrayConstructor {
  return dtype === "float64" ? Float64Array : Float32Array;
}

/** `data` as an array of `dtype`: the same array when it already is one, else a converted copy. */
export function inDtype(data: FloatArray, dtype: Dtype): FloatArray {
  const kind = arrayOf(dtype);
  return data instanceof kind ? data : kind.from(data);
}

/** float64 when every array is a Float64Array, else float32 (the service's default). */
export function dtypeOf(value: TensorsInput): Dtype {
  const arrays = isSingle(value) ? [value] : Object.values(value);
  const all64 = arrays.every((item) => (isFloatArray(item) ? item : item.data) instanceof Float64Array);
  return arrays.length > 0 && all64 ? "float64" : "float32";
}

/**
 * Parameters or gradients as tensors of `dtype` by name (the single form's is `params`).
 * A bare typed array takes its shape from `shapes` (the session's) when its length fits, else is 1-D.
 */
export function asTensors(
  value: TensorsInput,
  dtype: Dtype,
  shapes: Readonly<Record<string, readonly number[]>> = {},
): Record<string, Tensor> {
  const named: Readonly<Record<string, TensorInput>> = isSingle(value) ? { [SINGLE_TENSOR_NAME]: value } : value;
  const tensors: Record<string, Tensor> = {};
  for (const [name, item] of Object.entries(named)) {
    const data = isFloatArray(item) ? item : item.data;
    const shape = isFloatArray(item) ? impliedShape(item, shapes[name]) : item.shape;
    tensors[name] = tensor(inDtype(data, dtype), shape);
  }
  return tensors;
}

/** A bare array's shape: the session's for its tensor when the count fits (else 1-D, and the
 *  server's answer says how it differs). */
function impliedShape(data: FloatArray, expected: readonly number[] | undefined): readonly number[] {
  return expected !== undefined && elementCount(expected) === data.length ? expected : [data.length];
}

/** Tensors by name in a session's form: the one tensor, or all of them by name. */
export function inForm(tensors: Record<string, Tensor>, layout: "single" | "named"): Params {
  if (layout !== "single") return tensors;
  const single = tensors[SINGLE_TENSOR_NAME];
  if (single === undefined) throw new TypeError(`a single-form answer without its tensor "${SINGLE_TENSOR_NAME}"`);
  return single;
}

/** Tensors by name whatever the form (the single form's is `params`). */
export function byName(params: Params): Record<string, Tensor> {
  return isTensor(params) ? { [SINGLE_TENSOR_NAME]: params } : params;
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

/**
 * A number as JSON text, with the tokens Python's `json` writes for the non-finite ones
 * (`NaN`, `Infinity`, `-Infinity`), which the service reads: a NaN gradient then meets the
 * session's `nonfinite` rule instead of being a malformed body. `-0` keeps its sign.
 */
export function numberJson(value: number): string {
  if (Number.isFinite(value)) return Object.is(value, -0) ? "-0.0" : String(value);
  if (Number.isNaN(value)) return "NaN";
  return value > 0 ? "Infinity" : "-Infinity";
}

/** A tensor as nested JSON arrays (a bare number for 0-d). Every float32 value is written
 *  exactly: a float32 widened to a double prints as the shortest text of that double. */
export function tensorJson({ data, shape }: Tensor): string {
  const parts: string[] = [];
  let index = 0;
  const write = (dim: number): void => {
    if (dim === shape.length) {
      parts.push(numberJson(data[index++] as number));
      return;
    }
    parts.push("[");
    for (let item = 0; item < (shape[dim] as number); item++) {
      if (item > 0) parts.push(",");
      write(dim + 1);
    }
    parts.push("]");
  };
  write(0);
  return parts.join("");
}

/** Marks a tensor inside a request body, for `toJson` to write as nested arrays. */
export class JsonTensor {
  constructor(readonly tensor: Tensor) {}
}

/** Tensors by name in the wire form of a body: one `JsonTensor` (the single form's `params`),
 *  or an object of them. */
export function jsonForm(tensors: Record<string, Tensor>, single: boolean): JsonTensor | Record<string, JsonTensor> {
  if (single) return new JsonTensor(tensors[SINGLE_TENSOR_NAME] as Tensor);
  return Object.fromEntries(Object.entries(tensors).map(([name, item]) => [name, new JsonTensor(item)]));
}

/** A request body as JSON text: `JsonTensor`s as nested arrays, numbers by `numberJson`,
 *  `undefined` members left out (as `JSON.stringify` does). */
export function toJson(value: unknown): string {
  if (value instanceof JsonTensor) return tensorJson(value.tensor);
  if (typeof value === "number") return numberJson(value);
  if (Array.isArray(value)) return `[${value.map((item) => toJson(item ?? null)).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    return `{${Object.entries(value)
      .filter(([, item]) => item !== undefined)
      .map(([key, item]) => `${JSON.stringify(key)}:${toJson(item)}`)
      .join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** A JSON tensor (nested arrays or a number) as a tensor of `dtype`; `null` (how answers write a
 *  non-finite number) reads as NaN. Ragged nesting is refused. */
export function tensorFromJson(value: unknown, dtype: Dtype): Tensor {
  const shape: number[] = [];
  for (let level = value; Array.isArray(level); level = level[0]) shape.push(level.length);
  const data = new (arrayOf(dtype))(elementCount(shape));
  let index = 0;
  const read = (item: unknown, dim: number): void => {
    if (dim === shape.length) {
      if (item !== null && typeof item !== "number") throw new TypeError(`not a number in a tensor: ${String(item)}`);
      data[index++] = item ?? Number.NaN;
      return;
    }
    if (!Array.isArray(item) || item.length !== shape[dim]) throw new TypeError("a ragged tensor");
    for (const inner of item) read(inner, dim + 1);
  };
  read(value, 0);
  return { data, shape };
}

/** JSON tensors in either form as tensors of `dtype` by name. */
export function tensorsFromJson(value: unknown, dtype: Dtype, layout: "single" | "named"): Record<string, Tensor> {
  if (layout === "single") return { [SINGLE_TENSOR_NAME]: tensorFromJson(value, dtype) };
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([name, item]) => [name, tensorFromJson(item, dtype)]),
  );
}
