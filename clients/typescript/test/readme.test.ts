/**
 * The README's example, run as printed (as JavaScript: it carries no type annotations) against the
 * live server, the package's built entry point standing in for "optaas-client".
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { test } from "node:test";
import { PACKAGE_ROOT } from "../scripts/repository.mjs";
import { serverUrl } from "./support.js";

test("the README's example runs as printed", () => {
  const readme = readFileSync(join(PACKAGE_ROOT, "README.md"), "utf8");
  const block = /## Use\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block !== undefined, "the README has a ```ts block under ## Use");
  const entry = pathToFileURL(join(PACKAGE_ROOT, "dist", "src", "index.js")).href;
  const program = block.replace('"optaas-client"', JSON.stringify(entry)).replace("http://127.0.0.1:8000", serverUrl());
  const directory = mkdtempSync(join(tmpdir(), "optaas-readme-"));
  try {
    const file = join(directory, "readme.mjs");
    writeFileSync(file, program);
    const lines = execFileSync(process.execPath, [file], { encoding: "utf8", timeout: 120_000 }).trim().split("\n");
    // Adam's first step moves each coordinate by lr·sign(g) (0 for g = 0); warm-up: η_0 = 1e-3/100.
    assert.match(lines[0]!, /^1 0\.00001 Float32Array\(4\) \[/);
    // SGD with momentum 0.5 on ½‖x‖² contracts by √0.5 a step: converged after 100 steps.
    const last = /^(\d+) Float64Array\(2\) \[ (\S+), (\S+) \]$/.exec(lines.at(-1)!);
    assert.ok(last !== null, lines.at(-1));
    assert.equal(Number(last[1]), 100);
    assert.ok(
      [last[2], last[3]].every((value) => Math.abs(Number(value)) < 1e-9),
      lines.at(-1),
    );
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
