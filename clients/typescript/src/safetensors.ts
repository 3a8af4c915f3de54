/**
 * safetensors files (https://github.com/huggingface/safetensors), the service's binary form.
 *
 *     [8 bytes: N, the header's length, unsigned little-endian]
 *     [N bytes: JSON header {"__metadata__": {string: string}, name: {dtype, shape, data_offsets}}]
 *     [the tensors' bytes, little-endian, row-major; data_offsets = [begin, end) from here]
 *
 * Written as the `safetensors` library and the server write it: the header padded with spaces
 * to a multiple of 8 bytes (so 8-byte elements that follow are aligned), the tensors in order.
 * Read into views of the body, not copies, wherever an element's alignment allows.
 */

export type SafetensorsDtype = "F32" | "F64" | "I64";
export type SafetensorsArray = Float32Array | Float64Array | BigInt64Array;

export interface SafetensorsTensor {
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  readonly data: SafetensorsArray;
}

export interface SafetensorsFile {
  tensors: Record<string, SafetensorsTensor>;
  /** `__metadata__` ({} if absent): text by text. */
  metadata: Record<string, string>;
}

export const SAFETENSORS_MEDIA_TYPE = "application/vnd.safetensors";

/** A body that is not a safetensors file this module can read. */
export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

const HEADER_LENGTH_BYTES = 8;
const HEADER_ALIGNMENT = 8;
const MAX_HEADER_BYTES = 100_000_000; // the safetensors library's own limit
const METADATA_KEY = "__metadata__";

const ARRAYS = {
  F32: Float32Array,
  F64: Float64Array,
  I64: BigInt64Array,
} as const;

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function dtypeOf(data: SafetensorsArray): SafetensorsDtype {
  if (data instanceof Float32Array) return "F32";
  if (data instanceof Float64Array) return "F64";
  return "I64";
}

/** A safetensors file of `tensors` (each `{data, shape}`; 0-d: shape `[]`) with `metadata`. */
export function encodeSafetensors(
  tensors: Readonly<Record<string, { readonly data: SafetensorsArray; readonly shape: readonly number[] }>>,
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header[METADATA_KEY] = { ...metadata };
  let position = 0;
  for (const [name, { data, shape }] of Object.entries(tensors)) {
    if (shape.reduce((count, size) => count * size, 1) !== data.length) {
      throw new RangeError(`tensor "${name}": shape [${shape.join(", ")}] does not hold ${data.length} elements`);
    }
    header[name] = { dtype: dtypeOf(data), shape: [...shape], data_offsets: [position, position + data.byteLength] };
    position += data.byteLength;
  }
  const encoded = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(encoded.length / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  const file = new Uint8Array(HEADER_LENGTH_BYTES + headerLength + position);
  const view = new DataView(file.buffer);
  view.setBigUint64(0, BigInt(headerLength), true);
  file.set(encoded, HEADER_LENGTH_BYTES);
  file.fill(0x20, HEADER_LENGTH_BYTES + encoded.length, HEADER_LENGTH_BYTES + headerLength);
  let offset = HEADER_LENGTH_BYTES + headerLength;
  for (const { data } of Object.values(tensors)) {
    writeLittleEndian(data, file, offset);
    offset += data.byteLength;
  }
  return file;
}

function writeLittleEndian(data: SafetensorsArray, file: Uint8Array, offset: number): void {
  if (LITTLE_ENDIAN_HOST) {
    file.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
    return;
  }
  const view = new DataView(file.buffer, file.byteOffset + offset, data.byteLength);
  data.forEach((value: number | bigint, index: number) => {
    if (data instanceof Float32Array) view.setFloat32(index * 4, value as number, true);
    else if (data instanceof Float64Array) view.setFloat64(index * 8, value as number, true);
    else view.setBigInt64(index * 8, value as bigint, true);
  });
}

/**
 * The tensors of a safetensors file by name, in the file's order, and its `__metadata__`.
 *
 * Each tensor's data is a view of `body` when its offset is a multiple of its element size
 * (always so for files written as above, when `body` starts at an aligned offset), a copy
 * otherwise. Changing a view changes `body`. F32, F64 and I64 are read; other dtypes, and any
 * header whose parts do not agree (or data not covered exactly by the tensors), are refused.
 */
export function decodeSafetensors(body: Uint8Array | ArrayBuffer): SafetensorsFile {
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  if (bytes.length < HEADER_LENGTH_BYTES) fail("it is shorter than the 8-byte header length");
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true);
  if (length > BigInt(Math.min(MAX_HEADER_BYTES, bytes.length - HEADER_LENGTH_BYTES))) {
    fail(`its header length (${length} bytes) passes the end of the body`);
  }
  const dataStart = HEADER_LENGTH_BYTES + Number(length);
  const header = parseHeader(bytes.subarray(HEADER_LENGTH_BYTES, dataStart));
  const metadata = readMetadata(header[METADATA_KEY]);
  delete header[METADATA_KEY];
  const entries = Object.entries(header).map(([name, entry]) => [name, readEntry(name, entry)] as const);
  checkCoverage(
    entries.map(([, entry]) => entry),
    bytes.length - dataStart,
  );
  const tensors: Record<string, SafetensorsTensor> = {};
  for (const [name, { dtype, shape, begin, end }] of entries) {
    tensors[name] = { dtype, shape, data: readArray(dtype, bytes, dataStart + begin, dataStart + end) };
  }
  return { tensors, metadata };
}

function fail(reason: string): never {
  throw new SafetensorsError(`not a valid safetensors file: ${reason}`);
}

function parseHeader(text: Uint8Array): Record<string, unknown> {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(text));
  } catch (error) {
    fail(`its header is not UTF-8 JSON (${(error as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("its header is not a JSON object");
  return header as Record<string, unknown>;
}

function readMetadata(raw: unknown): Record<string, string> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== "object" || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === "string")) {
    fail(`its ${METADATA_KEY} is not an object of strings`);
  }
  return raw as Record<string, string>;
}

interface Entry {
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

function isCountList(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((item) => Number.isSafeInteger(item) && item >= 0);
}

function readEntry(name: string, entry: unknown): Entry {
  const { dtype, shape, data_offsets: offsets } = (entry ?? {}) as Record<string, unknown>;
  if (typeof dtype !== "string" || !isCountList(shape)) fail(`tensor "${name}" has no valid dtype and shape`);
  if (!isCountList(offsets) || offsets.length !== 2 || (offsets[0] as number) > (offsets[1] as number)) {
    fail(`tensor "${name}" has no valid data_offsets`);
  }
  if (!(dtype in ARRAYS)) fail(`tensor "${name}" has dtype ${dtype}; this client reads F32, F64 and I64`);
  const kind = dtype as SafetensorsDtype;
  const [begin, end] = offsets as [number, number];
  const count = shape.reduce((total, size) => total * size, 1);
  if (count * ARRAYS[kind].BYTES_PER_ELEMENT !== end - begin) {
    fail(`tensor "${name}": its shape and dtype do not fit its data_offsets`);
  }
  return { dtype: kind, shape, begin, end };
}

/** The tensors' data must tile the data section exactly: no gaps, overlaps or leftovers. */
function checkCoverage(entries: Entry[], size: number): void {
  let position = 0;
  for (const { begin, end } of [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end)) {
    if (begin !== position) fail("its tensors' data overlap or leave gaps");
    position = end;
  }
  if (position !== size) fail(`its tensors' data cover ${position} of ${size} bytes`);
}

function readArray(dtype: SafetensorsDtype, bytes: Uint8Array, begin: number, end: number): SafetensorsArray {
  const kind = ARRAYS[dtype];
  const count = (end - begin) / kind.BYTES_PER_ELEMENT;
  const offset = bytes.byteOffset + begin;
  if (LITTLE_ENDIAN_HOST) {
    if (offset % kind.BYTES_PER_ELEMENT === 0) return new kind(bytes.buffer as ArrayBuffer, offset, count);
    return new kind(bytes.slice(begin, end).buffer, 0, count); // misaligned: one copy
  }
  const view = new DataView(bytes.buffer, offset, end - begin);
  if (dtype === "I64") return BigInt64Array.from({ length: count }, (_, i) => view.getBigInt64(i * 8, true));
  const size = kind.BYTES_PER_ELEMENT;
  const read = (i: number): number => (size === 4 ? view.getFloat32(i * 4, true) : view.getFloat64(i * 8, true));
  return dtype === "F32"
    ? Float32Array.from({ length: count }, (_, i) => read(i))
    : Float64Array.from({ length: count }, (_, i) => read(i));
}
