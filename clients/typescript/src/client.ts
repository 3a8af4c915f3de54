/**
 * The client: a server (`Client`) and its sessions (`Session`), thin classes over one
 * `Transport`.
 *
 *     const client = new Client({ url: "http://127.0.0.1:8000" });
 *     const session = await client.createSession({ params: { w, b }, optimizer: { type: "adam", lr: 1e-3 } });
 *     const result = await session.step({ w: gradW, b: gradB }, { loss });
 *
 * Typed arrays in, typed arrays out: parameters and gradients are one tensor (the single form)
 * or tensors by name (the named form), and answers come back in the session's form and dtype.
 * Sessions of at least `binaryThreshold` elements send and receive tensors as safetensors files.
 * Error answers are thrown as the typed errors of `errors.ts`.
 */
import { errorFor, ProtocolError, UnsupportedMediaType } from "./errors.js";
import {
  type Export,
  exportFromJson,
  exportFromSafetensors,
  exportToJson,
  exportToSafetensors,
  inArray,
  readSafetensors,
} from "./exports.js";
import type { Readable } from "openapi-typescript-helpers";
import type { components } from "./openapi.js";
import { encodeSafetensors, SAFETENSORS_MEDIA_TYPE } from "./safetensors.js";
import {
  asTensors,
  dtypeOf,
  type Dtype,
  elementCount,
  inForm,
  isSingle,
  jsonForm,
  type Params,
  type Tensor,
  type TensorsInput,
  tensorsFromJson,
  toJson,
} from "./tensors.js";
import { type Call, Transport, type TransportOptions } from "./transport.js";

type Schemas = components["schemas"];
export type OptimizerSpec = Schemas["CreateSession"]["optimizer"];
export type ScheduleSpec = NonNullable<Schemas["CreateSession"]["schedule"]>;
export type SessionPatch = Schemas["SessionPatch"];
// Answers as openapi-fetch types them (`Readable`: tuples such as `betas` read as arrays).
export type SessionView = Readable<Schemas["SessionView"]>;
export type CreatedSession = Readable<Schemas["CreatedSession"]>;
export type HistoryRecord = Readable<Schemas["HistoryPage"]["records"][number]>;

export const DEFAULT_URL = "http://127.0.0.1:8000";
const JSON_MEDIA_TYPE = "application/json";
const HISTORY_PAGE_LIMIT = 1000;
const SERVER_DEFAULT_WAIT_SECONDS = 10;

/**
 * Sessions with at least this many elements (over all tensors) send and receive tensors as
 * safetensors. Below it JSON is cheap (65 536 numbers are ~1 MB of text) and its step answers
 * are sure to carry `grad_norm` and `update_norm`. The Python client's threshold.
 */
export const DEFAULT_BINARY_THRESHOLD = 65_536;

export interface ClientOptions extends TransportOptions {
  /** The server (default http://127.0.0.1:8000). */
  url?: string;
  /** Elements from which tensors travel as safetensors; `null`: never. */
  binaryThreshold?: number | null;
  /** Sent as `X-API-Key` when creating, importing and forking sessions. */
  apiKey?: string;
}

/** Everything a new session takes; `params` as tensors, `optimizer` a spec or just its type. */
export interface CreateSessionOptions extends Omit<Schemas["CreateSession"], "params" | "optimizer"> {
  params: TensorsInput;
  optimizer: OptimizerSpec | OptimizerSpec["type"];
}

/** What a step reported. A binary answer is sure to carry `step` and `lr` only. */
export interface StepInfo {
  step: number;
  lr: number | null;
  gradNorm?: number | null;
  updateNorm?: number | null;
  skipped?: boolean;
}

/** An applied step: its numbers and (unless `returnParams: false`) the new parameters. */
export interface StepResult extends StepInfo {
  kind: "step";
  params?: Params;
  /** The kept answer to an earlier attempt with the same `Idempotency-Key`: nothing applied now. */
  replayed: boolean;
}

/**
 * A gradient an `accumulate: K` session counted without completing its step (202): the session
 * is at step `step`, `received` of K are in, `missing` to come; `wait()` waits for step t + 1.
 */
export interface Pending {
  kind: "pending";
  step: number;
  received: number;
  missing: number;
  waitForStep: number;
  wait(options?: { timeoutS?: number }): Promise<Params>;
}

export interface StepOptions {
  /** Feeds the history and `reduce_on_plateau`. */
  loss?: number;
  /** The gradients hold a subset of the tensors; the others are left untouched. */
  partial?: boolean;
  /** Apply only if the session is at step t (else `PreconditionFailed`). */
  ifMatch?: number;
  /** false: the answer leaves θ out (`?return=none`). */
  returnParams?: boolean;
  /** Force safetensors on or off (default: by the session's size). */
  binary?: boolean;
  signal?: AbortSignal;
}

export class Client {
  readonly url: string;
  readonly transport: Transport;
  readonly binaryThreshold: number | null;
  readonly apiKey?: string;
  readonly timeoutMs: number;
  /** Cleared when the server refuses safetensors (415): JSON from then on. */
  binarySupported = true;

  constructor(options: ClientOptions = {}) {
    this.url = (options.url ?? DEFAULT_URL).replace(/\/+$/, "");
    this.binaryThreshold = options.binaryThreshold === undefined ? DEFAULT_BINARY_THRESHOLD : options.binaryThreshold;
    this.apiKey = options.apiKey;
    this.transport = new Transport(this.url, {
      ...options,
      headers: { Accept: JSON_MEDIA_TYPE, "User-Agent": "optaas-client-typescript/0.1", ...options.headers },
    });
    this.timeoutMs = this.transport.timeoutMs;
  }

  get api(): Transport["api"] {
    return this.transport.api;
  }

  /** A new session at t = 0 with θ₀ = `params`. `dtype` defaults to float64 when every array is
   *  a Float64Array, float32 otherwise; settings left out take the server's defaults. */
  async createSession(options: CreateSessionOptions): Promise<Session> {
    const { params, optimizer, ...settings } = options;
    const dtype = settings.dtype ?? dtypeOf(params);
    const body: Schemas["CreateSession"] = {
      ...settings,
      params: wire(asTensors(params, dtype), isSingle(params)),
      dtype,
      optimizer: typeof optimizer === "string" ? ({ type: optimizer } as OptimizerSpec) : optimizer,
    };
    const result = await this.api.POST("/v1/sessions", {
      body,
      bodySerializer: toJson,
      headers: this.apiKeyHeader(),
    });
    return Session.fromCreated(this, unwrap(result));
  }

  /** A handle on an existing session (read once: a wrong id or token fails here). */
  async session(id: string, token: string): Promise<Session> {
    const handle = new Session(this, id, token);
    await handle.info();
    return handle;
  }

  /** A new session (new id and token) from an export, as a safetensors file when `binary`
   *  (default: by size). */
  async importSession(exported: Export, options: { binary?: boolean } = {}): Promise<Session> {
    const elements = Object.values(asTensors(exported.params, exported.dtype)).reduce((n, t) => n + t.data.length, 0);
    const binary = this.useBinary(elements, options.binary);
    const result = await this.api.POST("/v1/sessions/import", {
      body: (binary ? exportToSafetensors(exported) : exportToJson(exported)) as Schemas["StateExport"],
      bodySerializer: binary ? identity : toJson,
      headers: { ...this.apiKeyHeader(), "Content-Type": binary ? SAFETENSORS_MEDIA_TYPE : JSON_MEDIA_TYPE },
    });
    return Session.fromCreated(this, unwrap(result));
  }

  /**
   * η_0 … η_{steps−1} of `schedule` (NaN where not finite) at base rate `lr`; without it, the
   * `optimizer`'s (a spec or a type: its type's default lr), else 1.
   */
  async previewSchedule(
    schedule: ScheduleSpec,
    options: { steps: number; lr?: number; optimizer?: OptimizerSpec | OptimizerSpec["type"] },
  ): Promise<Float64Array> {
    const { optimizer } = options;
    const result = await this.api.POST("/v1/schedules/preview", {
      body: {
        schedule,
        steps: options.steps,
        lr: options.lr ?? (optimizer === undefined ? 1 : null),
        optimizer: typeof optimizer === "string" ? ({ type: optimizer } as OptimizerSpec) : optimizer,
      },
      bodySerializer: toJson,
    });
    return Float64Array.from(unwrap(result).lr, (rate) => rate ?? Number.NaN);
  }

  /** Whether the server and its database answer (`GET /readyz`), without retrying. */
  async ready(): Promise<boolean> {
    try {
      const result = await this.api.GET("/readyz", { fetch: this.transport.fetchFor({ retries: 0 }) });
      return result.response.status === 200;
    } catch {
      return false;
    }
  }

  /** Whether tensors of `elements` elements travel as safetensors. */
  useBinary(elements: number, binary?: boolean): boolean {
    if (binary !== undefined) return binary;
    return this.binarySupported && this.binaryThreshold !== null && elements >= this.binaryThreshold;
  }

  apiKeyHeader(): Record<string, string> {
    return this.apiKey ? { "X-API-Key": this.apiKey } : {};
  }
}

/**
 * A handle on one session: step it, read it, change it, fork, export or delete it. `stepCount`
 * is t as last seen, `lastStep` what the latest step reported; the handle holds nothing the
 * server does not have.
 */
export class Session {
  view: SessionView | undefined;
  stepCount: number | undefined;
  lastStep: StepInfo | undefined;

  constructor(
    readonly client: Client,
    readonly id: string,
    readonly token: string,
  ) {}

  static fromCreated(client: Client, created: CreatedSession): Session {
    const session = new Session(client, created.id, created.token);
    session.remember(created);
    return session;
  }

  // -- what it is -------------------------------------------------------------------------

  get layout(): "single" | "named" {
    return this.known().layout;
  }

  get dtype(): Dtype {
    return this.known().dtype;
  }

  get shapes(): Record<string, number[]> {
    return this.known().shapes;
  }

  /** Elements over all tensors. */
  get size(): number {
    return Object.values(this.shapes).reduce((total, shape) => total + elementCount(shape), 0);
  }

  /** The session as the server shows it: config with every default, step, shapes, … */
  async info(): Promise<SessionView> {
    const result = await this.client.api.GET("/v1/sessions/{session_id}", {
      params: { path: { session_id: this.id } },
      headers: this.auth(),
    });
    const view = unwrap(result);
    this.remember(view);
    return view;
  }

  // -- stepping ---------------------------------------------------------------------------

  /** Post one gradient (same form as the parameters; a bare typed array takes its tensor's
   *  shape); the new parameters in the session's form, or a `Pending` on an accumulating session. */
  async step(gradients: TensorsInput, options: StepOptions = {}): Promise<StepResult | Pending> {
    const known = this.view ?? (await this.info());
    const tensors = asTensors(gradients, known.dtype, known.shapes);
    const returnParams = options.returnParams ?? true;
    let binary = this.client.useBinary(this.size, options.binary);
    if (binary) {
      try {
        return await this.postStepBinary(tensors, options, returnParams);
      } catch (error) {
        if (!(error instanceof UnsupportedMediaType)) throw error;
        this.client.binarySupported = false; // an older server: JSON from now on
        binary = false;
      }
    }
    const result = await this.client.api.POST("/v1/sessions/{session_id}/step", {
      params: { path: { session_id: this.id }, query: returnParams ? {} : { return: "none" } },
      body: {
        gradients: wire(tensors, isSingle(gradients)),
        loss: options.loss,
        partial: options.partial || undefined,
      } satisfies Schemas["StepRequest"] as Schemas["StepRequest"],
      bodySerializer: toJson,
      headers: { ...this.auth(), ...ifMatch(options.ifMatch) },
      fetch: this.client.transport.fetchFor({ signal: options.signal }),
    });
    const answer = unwrap(result) as Schemas["StepResponse"] | Schemas["StepAccepted"];
    return this.stepOutcome(answer, result.response);
  }

  private async postStepBinary(
    tensors: Record<string, Tensor>,
    options: StepOptions,
    returnParams: boolean,
  ): Promise<StepResult | Pending> {
    // Metadata values are JSON text: "0.42", "NaN" as Python's json writes it, "true".
    const metadata: Record<string, string> = {};
    if (options.loss !== undefined) metadata.loss = toJson(options.loss);
    if (options.partial) metadata.partial = "true";
    const result = await this.client.api.POST("/v1/sessions/{session_id}/step", {
      params: { path: { session_id: this.id }, query: returnParams ? {} : { return: "none" } },
      body: encodeSafetensors(tensors, metadata),
      bodySerializer: identity,
      headers: {
        ...this.auth(),
        ...ifMatch(options.ifMatch),
        "Content-Type": SAFETENSORS_MEDIA_TYPE,
        Accept: returnParams ? `${SAFETENSORS_MEDIA_TYPE}, ${JSON_MEDIA_TYPE};q=0.5` : JSON_MEDIA_TYPE,
      },
      parseAs: "arrayBuffer",
      fetch: this.client.transport.fetchFor({ signal: options.signal }),
    });
    const body = unwrap(result) as unknown as ArrayBuffer;
    if (mediaType(result.response) === SAFETENSORS_MEDIA_TYPE) {
      const { tensors: arrays, metadata: numbers } = readSafetensors(body);
      const info = stepInfoFromMetadata(numbers);
      this.rememberStep(info);
      return { kind: "step", ...info, params: this.inOrder(arrays), replayed: replayed(result.response) };
    }
    return this.stepOutcome(JSON.parse(new TextDecoder().decode(body)), result.response);
  }

  private stepOutcome(
    answer: Schemas["StepResponse"] | Schemas["StepAccepted"],
    response: Response,
  ): StepResult | Pending {
    if (response.status === 202) return this.pending(answer as Schemas["StepAccepted"]);
    const applied = answer as Schemas["StepResponse"];
    const info: StepInfo = {
      step: applied.step,
      lr: applied.lr,
      gradNorm: applied.grad_norm,
      updateNorm: applied.update_norm,
      skipped: applied.skipped,
    };
    this.rememberStep(info);
    const params =
      applied.params == null
        ? undefined
        : inForm(tensorsFromJson(applied.params, this.dtype, this.layout), this.layout);
    return { kind: "step", ...info, params, replayed: replayed(response) };
  }

  private pending(accepted: Schemas["StepAccepted"]): Pending {
    this.stepCount = accepted.step;
    return {
      kind: "pending",
      step: accepted.step,
      received: accepted.received,
      missing: accepted.missing,
      waitForStep: accepted.wait_for_step,
      wait: (options = {}) => this.params({ waitForStep: accepted.wait_for_step, timeoutS: options.timeoutS }),
    };
  }

  // -- reading ----------------------------------------------------------------------------

  /** θ_t in the session's form. With `waitForStep: t`, waits (up to `timeoutS` seconds, the
   *  server's default if absent) until the session has reached step t, else `StepWaitTimeout`.
   *  `forEval: true` asks for the weights to evaluate instead (`?for=eval`): schedule-free's x,
   *  ASGD's average, θ itself for the other types. */
  async params(
    options: { forEval?: boolean; waitForStep?: number; timeoutS?: number; binary?: boolean } = {},
  ): Promise<Params> {
    const known = this.view ?? (await this.info());
    const waiting = options.waitForStep !== undefined;
    const binary = this.client.useBinary(this.size, options.binary);
    const call: Call = waiting
      ? { timeoutMs: this.client.timeoutMs + 1000 * (options.timeoutS ?? SERVER_DEFAULT_WAIT_SECONDS) }
      : {};
    const result = await this.client.api.GET("/v1/sessions/{session_id}/params", {
      params: {
        path: { session_id: this.id },
        query: {
          for: options.forEval ? "eval" : undefined,
          wait_for_step: options.waitForStep,
          timeout: options.timeoutS,
        },
      },
      headers: { ...this.auth(), ...(binary ? { Accept: `${SAFETENSORS_MEDIA_TYPE}, ${JSON_MEDIA_TYPE};q=0.5` } : {}) },
      parseAs: "arrayBuffer",
      fetch: this.client.transport.fetchFor(call),
    });
    const body = unwrap(result) as unknown as ArrayBuffer;
    if (mediaType(result.response) === SAFETENSORS_MEDIA_TYPE) {
      const { tensors, metadata } = readSafetensors(body);
      if (metadata.step !== undefined) this.stepCount = Number(metadata.step);
      return this.inOrder(tensors);
    }
    const answer = JSON.parse(new TextDecoder().decode(body)) as Schemas["ParamsResponse"];
    this.stepCount = answer.step;
    return inForm(tensorsFromJson(answer.params, known.dtype, known.layout), known.layout);
  }

  /** History records with `seq > after`, oldest first (all of them, or `limit`), page by page. */
  async history(options: { after?: number; limit?: number } = {}): Promise<HistoryRecord[]> {
    const records: HistoryRecord[] = [];
    let cursor: number | null = options.after ?? 0;
    while (cursor !== null && (options.limit === undefined || records.length < options.limit)) {
      const wanted = options.limit === undefined ? HISTORY_PAGE_LIMIT : options.limit - records.length;
      const result = await this.client.api.GET("/v1/sessions/{session_id}/history", {
        params: {
          path: { session_id: this.id },
          query: { after: cursor, limit: Math.min(wanted, HISTORY_PAGE_LIMIT) },
        },
        headers: this.auth(),
      });
      const page: Schemas["HistoryPage"] = unwrap(result);
      records.push(...page.records);
      cursor = page.next;
    }
    return records;
  }

  /** The whole run (`GET …/state`): config, t, θ and every optimizer slot, as typed arrays. */
  async export(options: { binary?: boolean } = {}): Promise<Export> {
    if (this.view === undefined) await this.info();
    const binary = this.client.useBinary(this.size, options.binary);
    const result = await this.client.api.GET("/v1/sessions/{session_id}/state", {
      params: { path: { session_id: this.id } },
      headers: { ...this.auth(), ...(binary ? { Accept: `${SAFETENSORS_MEDIA_TYPE}, ${JSON_MEDIA_TYPE};q=0.5` } : {}) },
      parseAs: "arrayBuffer",
    });
    const body = unwrap(result) as unknown as ArrayBuffer;
    if (mediaType(result.response) === SAFETENSORS_MEDIA_TYPE) return exportFromSafetensors(body);
    return exportFromJson(JSON.parse(new TextDecoder().decode(body)));
  }

  // -- changing ---------------------------------------------------------------------------

  /** Change hyper-parameters or the schedule mid-run (a JSON merge patch of the config); t and
   *  the state are kept. The session's new view is returned. */
  async patch(changes: SessionPatch, options: { ifMatch?: number } = {}): Promise<SessionView> {
    const result = await this.client.api.PATCH("/v1/sessions/{session_id}", {
      params: { path: { session_id: this.id } },
      body: changes,
      bodySerializer: toJson,
      headers: { ...this.auth(), ...ifMatch(options.ifMatch) },
    });
    const view = unwrap(result);
    this.remember(view);
    return view;
  }

  /** A new session (new id and token) with this one's θ, state and t; optional overrides as in
   *  `patch`. */
  async fork(changes: SessionPatch = {}): Promise<Session> {
    const result = await this.client.api.POST("/v1/sessions/{session_id}/fork", {
      params: { path: { session_id: this.id } },
      body: changes,
      bodySerializer: toJson,
      headers: { ...this.auth(), ...this.client.apiKeyHeader() },
    });
    return Session.fromCreated(this.client, unwrap(result));
  }

  /** Delete the session and everything stored for it. A 404 after an attempt whose answer was
   *  lost means that attempt deleted it. */
  async delete(): Promise<void> {
    const call: Call = {};
    const result = await this.client.api.DELETE("/v1/sessions/{session_id}", {
      params: { path: { session_id: this.id } },
      headers: this.auth(),
      fetch: this.client.transport.fetchFor(call),
    });
    if (result.response.status === 404 && call.lostAnswer) return;
    unwrap(result);
  }

  // -- internals --------------------------------------------------------------------------

  private auth(): Record<string, string> {
    return { Authorization: `Bearer ${this.token}` };
  }

  private known(): SessionView {
    if (this.view === undefined) throw new Error("the session has not been read yet: await session.info() first");
    return this.view;
  }

  private remember(view: SessionView | CreatedSession): void {
    const { token: _token, ...rest } = view as CreatedSession;
    this.view = rest;
    this.stepCount = view.step;
  }

  private rememberStep(info: StepInfo): void {
    this.lastStep = info;
    this.stepCount = info.step;
  }

  /** A binary answer's tensors in the session's order, form and dtype. */
  private inOrder(arrays: ReturnType<typeof readSafetensors>["tensors"]): Params {
    const ordered: Record<string, Tensor> = {};
    for (const name of Object.keys(this.shapes)) {
      const item = arrays[name];
      if (item === undefined) throw new ProtocolError(`the answer lacks the tensor "${name}"`);
      ordered[name] = { data: inArray(item.data, this.dtype), shape: item.shape };
    }
    return inForm(ordered, this.layout);
  }
}

// ---------------------------------------------------------------------------------------------

/** The answer's data, or its typed error thrown. */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (!result.response.ok) throw errorFor(result.response, result.error);
  return result.data as T;
}

/** Tensors marked for `toJson`, typed as the schema's tensors (the wire form they become). */
function wire(tensors: Record<string, Tensor>, single: boolean): Schemas["CreateSession"]["params"] {
  return jsonForm(tensors, single) as unknown as Schemas["CreateSession"]["params"];
}

function identity<T>(body: T): T {
  return body;
}

function ifMatch(step: number | undefined): Record<string, string> {
  return step === undefined ? {} : { "If-Match": `"${step}"` };
}

function replayed(response: Response): boolean {
  return response.headers.get("idempotent-replayed") === "true";
}

function mediaType(response: Response): string {
  return (response.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
}

/** A binary step answer's numbers: `__metadata__` values are JSON text (`"1"`, `"0.001"`,
 *  `"null"`, `"true"`); a non-finite number counts as absent, as JSON answers write it. */
function stepInfoFromMetadata(metadata: Record<string, string>): StepInfo {
  const read = (key: string): unknown => {
    const text = metadata[key];
    if (text === undefined) return undefined;
    const value: unknown = JSON.parse(text.replace(/^-?Infinity$|^NaN$/, "null"));
    return value;
  };
  const step = read("step");
  if (typeof step !== "number") throw new ProtocolError("a binary step answer without its step");
  return {
    step,
    lr: (read("lr") as number | null | undefined) ?? null,
    gradNorm: read("grad_norm") as number | null | undefined,
    updateNorm: read("update_norm") as number | null | undefined,
    skipped: read("skipped") as boolean | undefined,
  };
}
