/**
 * The lecture's error surface, trained from TypeScript: five optimizers on an elongated quadratic,
 * every step posted to optaas (the TypeScript twin of examples/error_surface.py).
 *
 *     E(x, y) = ½·(100·x² + y²)      x the steep direction, y the flat one; minimum at (0, 0)
 *
 * from (1, 1). Gradient descent with η = 2/100 — as large as the steep direction allows — flips x
 * from +1 to −1 forever while y creeps in; Adagrad (σ the root mean square of every past gradient,
 * the lecture's form) reaches the minimum at once, but as its σ shrinks its steps grow until they
 * burst out again; the decay η_t = η/√(t+1) tames the bursts; RMSProp and Adam for comparison.
 * Then the learning-rate-free types at their defaults (Prodigy, D-Adaptation Adam, DoG,
 * schedule-free AdamW), each with where it lands: the weights to evaluate after the last step
 * (`?for=eval`: schedule-free's x, θ for the others).
 *
 * Run a server (`optaas serve`), then, in clients/typescript:
 *
 *     npm run example -- [--url http://127.0.0.1:8000] [--steps 300 | --quick] [--data trajectories.json]
 */
import { writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Client, type CreateSessionOptions, type Params, RemoteOptimizer, type Tensor } from "../src/index.js";

const STEEP = 100;
const FLAT = 1;
const START = [1, 1] as const;
export const QUICK_STEPS = 120; // enough for Adagrad's first burst (near step 60)

type Settings = Pick<CreateSessionOptions, "optimizer" | "schedule">;

export const RUNS: [string, Settings][] = [
  ["gradient descent, η = 0.02", { optimizer: { type: "sgd", lr: 2 / STEEP } }],
  ["Adagrad (lecture's σ), η = 0.5", { optimizer: { type: "adagrad", lr: 0.5, accumulator: "mean" } }],
  [
    "Adagrad, η_t = 0.5/√(t+1)",
    { optimizer: { type: "adagrad", lr: 0.5, accumulator: "mean" }, schedule: { type: "inverse_sqrt" } },
  ],
  ["RMSProp (σ₀ = |g₀|), η = 0.01", { optimizer: { type: "rmsprop", lr: 0.01, alpha: 0.9, init: "first_grad" } }],
  ["Adam, η = 0.05", { optimizer: { type: "adam", lr: 0.05 } }],
];

/** The second row of the Python example: each at its defaults — nothing chosen for this surface. */
export const LEARNING_RATE_FREE: [string, Settings][] = [
  ["Prodigy", { optimizer: { type: "prodigy" } }],
  ["D-Adaptation Adam", { optimizer: { type: "dadapt_adam" } }],
  ["DoG", { optimizer: { type: "dog" } }],
  ["schedule-free AdamW", { optimizer: { type: "schedule_free_adamw" } }],
];

export interface Trajectory {
  path: number[][];
  grad_norms: number[];
  lr: (number | null)[];
  /** With `landing`: the weights to evaluate after the last step. */
  landed?: number[];
}

function error([x, y]: Iterable<number>): number {
  return 0.5 * (STEEP * x! ** 2 + FLAT * y! ** 2);
}

function gradient([x, y]: Iterable<number>): Float64Array {
  return Float64Array.of(STEEP * x!, FLAT * y!);
}

function norm([x, y]: Iterable<number>): number {
  return Math.sqrt(x! * x! + y! * y!);
}

/** θ_0 … θ_steps on E, stepped by a RemoteOptimizer over one session (deleted afterwards); with
 *  `landing`, also the weights to evaluate after the last step (where the run lands). */
async function descend(client: Client, settings: Settings, steps: number, landing = false): Promise<Trajectory> {
  const theta = Float64Array.from(START);
  const optimizer = await RemoteOptimizer.create(client, { theta }, { ...settings, name: "error-surface" });
  const trajectory: Trajectory = { path: [Array.from(theta)], grad_norms: [], lr: [] };
  try {
    for (let t = 0; t < steps; t++) {
      const grad = gradient(theta);
      trajectory.grad_norms.push(norm(grad));
      const { lr } = await optimizer.step({ theta: grad }, { loss: error(theta) });
      trajectory.lr.push(lr);
      trajectory.path.push(Array.from(theta)); // θ was updated in place
    }
    if (landing) trajectory.landed = values(await optimizer.session.params({ forEval: true }));
  } finally {
    await optimizer.session.delete();
  }
  return trajectory;
}

/** The numbers of the run's one tensor. */
function values(params: Params): number[] {
  const tensor = isTensor(params) ? params : params.theta!;
  return Array.from(tensor.data);
}

function isTensor(params: Params): params is Tensor {
  return ArrayBuffer.isView((params as Tensor).data);
}

/** Python's `format(value, ".3g")`, so both examples print the same lines. */
export function formatG(value: number, digits = 3): string {
  if (!Number.isFinite(value)) return Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf";
  if (value === 0) return Object.is(value, -0) ? "-0" : "0";
  const [mantissa, power] = value.toExponential(digits - 1).split("e") as [string, string];
  const exponent = Number(power);
  const trim = (text: string): string => (text.includes(".") ? text.replace(/\.?0+$/, "") : text);
  if (exponent < -4 || exponent >= digits) {
    return `${trim(mantissa)}e${exponent < 0 ? "-" : "+"}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  return trim(value.toFixed(digits - 1 - exponent));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: "string", default: "http://127.0.0.1:8000" },
      steps: { type: "string", default: "300" },
      quick: { type: "boolean", default: false },
      data: { type: "string" },
    },
  });
  const steps = values.quick ? QUICK_STEPS : Number(values.steps);
  const client = new Client({ url: values.url });
  const runs: Record<string, Settings & Trajectory> = {};
  for (const [label, settings] of RUNS) {
    // As the Python example writes its data: a run without a schedule has `"schedule": null`.
    runs[label] = { schedule: null, ...settings, ...(await descend(client, settings, steps)) } as Settings & Trajectory;
    const final = norm(runs[label].path.at(-1)!);
    console.log(`${label.padEnd(34)} ‖θ_${steps}‖ = ${formatG(final)}`);
  }
  const free: Record<string, Settings & Trajectory> = {};
  for (const [label, settings] of LEARNING_RATE_FREE) {
    free[label] = { ...settings, ...(await descend(client, settings, steps, true)) };
    const landed = free[label].landed!;
    const lastRate = free[label].lr.at(-1) ?? Number.NaN;
    console.log(
      `${label.padEnd(34)} lands at (${formatG(landed[0]!)}, ${formatG(landed[1]!)}), ` +
        `‖·‖ = ${formatG(norm(landed))}, last step size ${formatG(lastRate)}`,
    );
  }
  if (values.data) {
    writeFileSync(values.data, JSON.stringify({ steps, runs, learning_rate_free: free }));
    console.log(`trajectories: ${values.data}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
