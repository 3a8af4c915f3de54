/**
 * Exports (`GET …/state`, `POST /v1/sessions/import`): the `optaas-state/1` format with typed
 * arrays in place of nested lists, read from and written to its JSON and safetensors forms.
 *
 * In safetensors θ is `param/<tensor>`, each slot `<slot>/<tensor>` (`step/<tensor>`: a 0-d
 * int64, the tensor's own update count), and the rest is text in `__metadata__`: `format`, `id`,
 * `dtype`, `layout` as they are, `step` in decimal, `name`, `tensors`, `config`,
 * `schedule_state` and `last_loss` as JSON.
 */
import { ProtocolError } from "./errors.js";
import type { components } from "./openapi.js";
import { decodeSafetensors, encodeSafetensors, SafetensorsError, type SafetensorsArray } from "./safetensors.js";
import {
  arrayOf,
  byName,
  type Dtype,
  inForm,
  jsonForm,
  JsonTensor,
  type Params,
  type Tensor,
  tensorFromJson,
  tensorsFromJson,
} from "./tensors.js";

type StateExport = components["schemas"]["StateExport"];

export const EXPORT_FORMAT = "optaas-state/1";
export const STEP_SLOT = "step";
const PARAM_PREFIX = "param/";
const JSON_METADATA = ["name", "tensors", "config", "schedule_state", "last_loss"] as const;

/** A tensor's slots: each a tensor in the session's dtype, and `step`, its update count. */
export type Slots = Record<string, Tensor | number>;

/** A session's whole run: the export document with typed arrays for θ and every slot. */
export interface Export extends Omit<StateExport, "params" | "state"> {
  params: Params;
  state: Record<string, Slots>;
}

/** An export as the service writes it in JSON. */
export function exportFromJson(document: StateExport): Export {
  checkFormat(document.format);
  const { dtype, layout } = document;
  const state: Record<string, Slots> = {};
  for (const [name, slots] of Object.entries(document.state)) {
    state[name] = Object.fromEntries(
      Object.entries(slots).map(([slot, value]) => [
        slot,
        slot === STEP_SLOT ? Number(value) : tensorFromJson(value, dtype),
      ]),
    );
  }
  return { ...document, params: inForm(tensorsFromJson(document.params, dtype, layout), layout), state };
}

/** An export as the JSON body an import takes (tensors marked for `toJson`). */
export function exportToJson(exported: Export): Record<string, unknown> {
  const state = Object.fromEntries(
    Object.entries(exported.state).map(([name, slots]) => [
      name,
      Object.fromEntries(
        Object.entries(slots).map(([slot, value]) => [slot, typeof value === "number" ? value : new JsonTensor(value)]),
      ),
    ]),
  );
  return { ...exported, params: jsonForm(byName(exported.params), exported.layout === "single"), state };
}

/** An export as the service writes it in safetensors. */
export function exportFromSafetensors(body: Uint8Array | ArrayBuffer): Export {
  const { tensors, metadata } = readSafetensors(body);
  checkFormat(metadata.format);
  const dtype = metadata.dtype as Dtype;
  const layout = metadata.layout as "single" | "named";
  const fields: Record<string, unknown> = Object.fromEntries(
    JSON_METADATA.filter((field) => field in metadata).map((field) => [field, JSON.parse(metadata[field] as string)]),
  );
  const names = fields.tensors as string[];
  const params: Record<string, Tensor> = {};
  const state: Record<string, Slots> = Object.fromEntries(names.map((name) => [name, {}]));
  for (const [key, { shape, data }] of Object.entries(tensors)) {
    const slash = key.indexOf("/");
    const [slot, tensor] = [key.slice(0, slash), key.slice(slash + 1)];
    if (key.startsWith(PARAM_PREFIX)) params[tensor] = { data: inArray(data, dtype), shape };
    else (state[tensor] ??= {})[slot] = slot === STEP_SLOT ? Number(data[0]) : { data: inArray(data, dtype), shape };
  }
  const ordered = Object.fromEntries(names.map((name) => [name, params[name] as Tensor]));
  return {
    format: EXPORT_FORMAT,
    id: metadata.id ?? null,
    name: (fields.name as string | null | undefined) ?? null,
    dtype,
    layout,
    tensors: names,
    config: fields.config as StateExport["config"],
    step: Number(metadata.step),
    schedule_state: (fields.schedule_state as Record<string, number> | undefined) ?? {},
    last_loss: (fields.last_loss as number | null | undefined) ?? null,
    params: inForm(ordered, layout),
    state,
  };
}

/** An export as the safetensors file an import takes. */
export function exportToSafetensors(exported: Export): Uint8Array {
  const kind = arrayOf(exported.dtype);
  const arrays: Record<string, { data: SafetensorsArray; shape: readonly number[] }> = {};
  const params = byName(exported.params);
  for (const [name, { data, shape }] of Object.entries(params)) {
    arrays[PARAM_PREFIX + name] = { data: data instanceof kind ? data : kind.from(data), shape };
  }
  for (const [tensor, slots] of Object.entries(exported.state)) {
    for (const [slot, value] of Object.entries(slots)) {
      arrays[`${slot}/${tensor}`] =
        typeof value === "number"
          ? { data: BigInt64Array.of(BigInt(value)), shape: [] }
          : { data: value.data instanceof kind ? value.data : kind.from(value.data), shape: value.shape };
    }
  }
  const metadata: Record<string, string> = {
    format: EXPORT_FORMAT,
    dtype: exported.dtype,
    layout: exported.layout,
    step: String(exported.step),
    name: JSON.stringify(exported.name ?? null),
    tensors: JSON.stringify(exported.tensors ?? Object.keys(params)),
    config: JSON.stringify(exported.config),
    schedule_state: JSON.stringify(exported.schedule_state ?? {}),
    last_loss: JSON.stringify(exported.last_loss ?? null),
  };
  if (exported.id !== undefined && exported.id !== null) metadata.id = exported.id;
  return encodeSafetensors(arrays, metadata);
}

/** A safetensors body from the server; a file that is not one is a `ProtocolError`. */
export function readSafetensors(body: Uint8Array | ArrayBuffer): ReturnType<typeof decodeSafetensors> {
  try {
    return decodeSafetensors(body);
  } catch (error) {
    if (error instanceof SafetensorsError) {
      throw new ProtocolError(`the server sent an unreadable safetensors file: ${error.message}`);
    }
    throw error;
  }
}

/** `data` as the session dtype's array (a view of it when it already is). */
export function inArray(data: SafetensorsArray, dtype: Dtype): Float32Array | Float64Array {
  const kind = arrayOf(dtype);
  if (data instanceof kind) return data;
  return kind.from(data instanceof BigInt64Array ? Array.from(data, Number) : data);
}

function checkFormat(format: unknown): void {
  if (format !== EXPORT_FORMAT) throw new ProtocolError(`not an ${EXPORT_FORMAT} export (format: ${String(format)})`);
}
