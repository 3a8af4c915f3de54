/**
 * A real optaas server process for the tests: `python -m app.cli serve` from the repository on a
 * free port with `memory://` sessions, ready once `/readyz` answers, stopped with its process group.
 *
 * The Python is `OPTAAS_PYTHON` (default: the repository's .venv, else python3).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { REPO_ROOT, serverPython } from "../scripts/repository.mjs";

const START_TIMEOUT_MS = 60_000;

/** A port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => (typeof address === "object" && address ? done(address.port) : fail(new Error("no port"))));
    });
  });
}

export class LiveServer {
  private process: ChildProcess | undefined;
  private log = "";

  private constructor(readonly url: string) {}

  /** Start a server (settings in `env`, e.g. `OPTAAS_API_KEYS`) and wait until it is ready. */
  static async start(env: Record<string, string> = {}): Promise<LiveServer> {
    const port = await freePort();
    const server = new LiveServer(`http://127.0.0.1:${port}`);
    const args = [
      "-m",
      "app.cli",
      "serve",
      "--host=127.0.0.1",
      `--port=${port}`,
      "--database-url=memory://",
      "--log-level=warning",
    ];
    const child = spawn(serverPython(), args, {
      cwd: REPO_ROOT,
      env: { ...process.env, PYTHONPATH: REPO_ROOT, PYTHONUNBUFFERED: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group, so stop() reaches everything it started
    });
    server.process = child;
    const keep = (chunk: Buffer): void => {
      server.log = (server.log + chunk.toString()).slice(-20_000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    await server.waitReady();
    return server;
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.process?.exitCode !== null)
        throw new Error(`the server exited (${this.process?.exitCode}):\n${this.log}`);
      try {
        const response = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2000) });
        await response.arrayBuffer();
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((done) => setTimeout(done, 100));
    }
    await this.stop();
    throw new Error(`the server was not ready in ${START_TIMEOUT_MS} ms:\n${this.log}`);
  }

  /** SIGTERM to the process group, SIGKILL if it has not gone in 15 s. */
  async stop(): Promise<void> {
    const child = this.process;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise((done) => child.once("exit", done));
    process.kill(-child.pid, "SIGTERM");
    const timer = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
  }
}
