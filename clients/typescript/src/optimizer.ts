/**
 * `RemoteOptimizer`: a session used like a local optimizer over named typed arrays.
 *
 *     const w = new Float32Array(784 * 10), b = new Float32Array(10);
 *     const optimizer = await RemoteOptimizer.create(client, { w: tensor(w, [784, 10]), b }, { optimizer: { type: "adam" } });
 *     await optimizer.step({ w: gradW, b: gradB }, { loss });   // w and b now hold θ_{t+1}
 *
 * `step` posts the gradients and copies the parameters the service answers into the arrays it
 * holds, in place (a gradient for only some tensors is a partial step: the others are left as
 * they are, state included). Tensors travel as safetensors from the client's `binaryThreshold`.
 */
import type { Client, CreateSessionOptions, Session, StepInfo, StepResult } from "./client.js";
import { ProtocolError } from "./errors.js";
import type { Export } from "./exports.js";
import { byName, isFloatArray, type Params, type Tensor, type TensorInput, tensor } from "./tensors.js";

export type NamedTensors = Readonly<Record<string, TensorInput>>;

export class RemoteOptimizer {
  /** The parameters by name: the caller's arrays, which `step` overwrites with θ_{t+1}. */
  readonly params: Readonly<Record<string, Tensor>>;
  private current: Session;

  private constructor(session: Session, params: Record<string, Tensor>) {
    this.current = session;
    this.params = params;
  }

  /** A new session over `params` (θ₀ = their values), with the session's settings. */
  static async create(
    client: Client,
    params: NamedTensors,
    settings: Omit<CreateSessionOptions, "params">,
  ): Promise<RemoteOptimizer> {
    const held = holdTensors(params);
    const session = await client.createSession({ ...settings, params: held });
    return new RemoteOptimizer(session, held);
  }

  /** Continue an existing session: its θ is copied into `params`, which must match its tensors. */
  static async attach(session: Session, params: NamedTensors): Promise<RemoteOptimizer> {
    const optimizer = new RemoteOptimizer(session, holdTensors(params));
    await optimizer.adopt(session);
    return optimizer;
  }

  get session(): Session {
    return this.current;
  }

  /** The rate of the latest step (before any: the rate the first will use). */
  get lr(): number | null {
    return this.current.lastStep?.lr ?? this.current.view?.lr ?? null;
  }

  /** t: the updates applied so far. */
  get stepCount(): number {
    return this.current.stepCount ?? 0;
  }

  /** Post the gradients (all tensors, or some: a partial step) and write θ_{t+1} into `params`. */
  async step(gradients: NamedTensors, options: { loss?: number; signal?: AbortSignal } = {}): Promise<StepInfo> {
    const names = Object.keys(gradients);
    const partial = names.length < Object.keys(this.params).length;
    const outcome = await this.current.step(gradients, { ...options, partial: partial || undefined });
    if (outcome.kind === "pending") {
      this.write(await outcome.wait());
      return { step: this.current.stepCount ?? outcome.waitForStep, lr: null };
    }
    this.write(outcome.params);
    return stepInfo(outcome);
  }

  /** The session's export (config, t, θ and every slot): keep it to continue the run later. */
  stateDict(): Promise<Export> {
    return this.current.export();
  }

  /** Continue from an export, as a new session (the current one is left as it is); its θ is
   *  copied into `params`. */
  async loadStateDict(exported: Export): Promise<void> {
    await this.adopt(await this.current.client.importSession(exported));
  }

  private async adopt(session: Session): Promise<void> {
    const view = session.view ?? (await session.info());
    const expected = Object.fromEntries(Object.entries(this.params).map(([name, { shape }]) => [name, shape]));
    if (view.layout !== "named" || JSON.stringify(view.shapes) !== JSON.stringify(expected)) {
      throw new TypeError(
        `session ${session.id} holds ${JSON.stringify(view.shapes)}; the parameters are ${JSON.stringify(expected)}`,
      );
    }
    this.write(await session.params());
    this.current = session;
  }

  private write(params: Params | undefined): void {
    if (params === undefined) throw new ProtocolError("the step's answer holds no parameters");
    const answered = byName(params);
    for (const [name, { data }] of Object.entries(this.params)) {
      const fresh = answered[name];
      if (fresh === undefined) throw new ProtocolError(`the answer lacks the tensor "${name}"`);
      data.set(fresh.data);
    }
  }
}

/** The caller's arrays as tensors: the same arrays (never copies), so `step` writes into them. */
function holdTensors(params: NamedTensors): Record<string, Tensor> {
  return Object.fromEntries(
    Object.entries(params).map(([name, given]) => [
      name,
      isFloatArray(given) ? tensor(given) : tensor(given.data, given.shape),
    ]),
  );
}

function stepInfo({ step, lr, gradNorm, updateNorm, skipped }: StepResult): StepInfo {
  return { step, lr, gradNorm, updateNorm, skipped };
}
