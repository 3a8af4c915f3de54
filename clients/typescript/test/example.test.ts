/**
 * The error-surface example, run as a user runs it (a separate process) in its short mode against
 * the live server: it prints a line per optimizer, and its trajectories tell the lecture's story.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { formatG, LEARNING_RATE_FREE, QUICK_STEPS, RUNS, type Trajectory } from "../examples/error_surface.js";
import { PACKAGE_ROOT } from "../scripts/repository.mjs";
import { serverUrl } from "./support.js";

const NEAR = 0.05; // "the neighbourhood of the minimum", as in the Python tests of the lecture

test("formatG writes what Python's .3g writes", () => {
  const cases: [number, string][] = [
    [0.000123456, "0.000123"],
    [1.5e-5, "1.5e-05"],
    [1, "1"],
    [123.456, "123"],
    [1234.5, "1.23e+03"],
    [0.1, "0.1"],
    [2.5e-13, "2.5e-13"],
    [0, "0"],
  ];
  for (const [value, text] of cases) assert.equal(formatG(value), text, String(value));
});

test("the example trains the error surface and tells the lecture's story", () => {
  const directory = mkdtempSync(join(tmpdir(), "optaas-example-"));
  try {
    const data = join(directory, "trajectories.json");
    const output = execFileSync(
      process.execPath,
      [join(PACKAGE_ROOT, "dist", "examples", "error_surface.js"), "--url", serverUrl(), "--quick", "--data", data],
      { encoding: "utf8", timeout: 300_000 },
    );
    const lines = output.trim().split("\n");
    assert.equal(lines.length, RUNS.length + LEARNING_RATE_FREE.length + 1);
    for (const [index, [label]] of [...RUNS, ...LEARNING_RATE_FREE].entries()) {
      assert.ok(lines[index]!.startsWith(label), lines[index]);
    }
    const written = JSON.parse(readFileSync(data, "utf8"));
    const runs = written.runs as Record<string, Trajectory>;
    const [gd, adagrad, decayed] = RUNS.map(([label]) => runs[label]!);
    for (const run of Object.values(runs)) assert.equal(run.path.length, QUICK_STEPS + 1);

    // Gradient descent is stuck with a large gradient: x flips sign every step, |x| stays near 1.
    const late = gd!.path.slice(-60);
    for (let t = 1; t < late.length; t++) assert.ok(Math.sign(late[t]![0]!) !== Math.sign(late[t - 1]![0]!));
    assert.ok(Math.min(...gd!.grad_norms.slice(-60)) > 0.99 * 100);

    // Adagrad reaches the neighbourhood, then bursts out in the flat direction.
    const arrival = firstArrival(adagrad!.path);
    assert.ok(arrival !== undefined && arrival < 100, `arrival ${arrival}`);
    assert.ok(Math.max(...adagrad!.path.slice(arrival).map(([, y]) => Math.abs(y!))) > 1);

    // The decay tames it: it arrives and stays near.
    const tamed = firstArrival(decayed!.path);
    assert.ok(tamed !== undefined);
    assert.ok(Math.max(...decayed!.path.slice(tamed).map(norm)) < NEAR);
    assert.deepEqual(
      decayed!.lr.slice(0, 4),
      [1, 2, 3, 4].map((k) => 0.5 / Math.sqrt(k)),
    );

    // The learning-rate-free runs: each chose its own step sizes (no two the same rate all along),
    // and each says where it lands. Schedule-free AdamW's weights to evaluate (x) are not its last
    // θ (y, where the gradients are taken); the others evaluate at θ itself.
    const free = written.learning_rate_free as Record<string, Trajectory>;
    assert.deepEqual(
      Object.keys(free),
      LEARNING_RATE_FREE.map(([label]) => label),
    );
    for (const [label, run] of Object.entries(free)) {
      assert.equal(run.path.length, QUICK_STEPS + 1, label);
      assert.equal(run.landed!.length, 2, label);
      const rates = run.lr.filter((rate): rate is number => rate !== null);
      assert.ok(rates.length === QUICK_STEPS && rates.every(Number.isFinite), label);
      const line = lines[RUNS.length + Object.keys(free).indexOf(label)]!;
      assert.ok(line.includes(`lands at (${formatG(run.landed![0]!)}, ${formatG(run.landed![1]!)})`), line);
      if (label === "schedule-free AdamW") assert.notDeepEqual(run.landed, run.path.at(-1), label);
      else assert.deepEqual(run.landed, run.path.at(-1), label);
    }
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

function norm(point: number[]): number {
  return Math.hypot(point[0]!, point[1]!);
}

function firstArrival(path: number[][]): number | undefined {
  const index = path.findIndex((point) => norm(point) < NEAR);
  return index < 0 ? undefined : index;
}
