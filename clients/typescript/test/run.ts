/**
 * `npm test`: the test files (dist/test/*.test.js) under Node's test runner, against one live
 * optaas: the server at `OPTAAS_URL` if set, else one started here for the run and stopped after.
 */
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { serverPython } from "../scripts/repository.mjs";
import { LiveServer } from "./live-server.js";

const here = dirname(fileURLToPath(import.meta.url));
const files = readdirSync(here)
  .filter((name) => name.endsWith(".test.js"))
  .sort()
  .map((name) => join(here, name));

const server = process.env.OPTAAS_URL ? undefined : await LiveServer.start();
const url = process.env.OPTAAS_URL ?? server!.url;
console.log(`# optaas at ${url}${server ? " (started for this run)" : ""}`);

let code = 1;
try {
  // One file at a time: some tests read server-wide figures (the session count in /metrics).
  const child = spawn(process.execPath, ["--test", "--test-concurrency=1", ...process.argv.slice(2), ...files], {
    stdio: "inherit",
    env: { ...process.env, OPTAAS_URL: url, OPTAAS_PYTHON: serverPython() },
  });
  code = await new Promise<number>((done) => child.once("exit", (status, signal) => done(status ?? (signal ? 1 : 0))));
} finally {
  await server?.stop();
}
process.exit(code);
