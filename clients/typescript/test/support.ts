/**
 * What the tests share: a client of the live server (`OPTAAS_URL`, set by test/run.ts), the
 * repository's Python for cross-checks, and a real HTTP proxy that misbehaves on purpose.
 */
import { execFileSync } from "node:child_process";
import {
  createServer,
  type IncomingMessage,
  request as httpRequest,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { Client, type ClientOptions } from "../src/index.js";
import { REPO_ROOT, serverPython } from "../scripts/repository.mjs";

export function serverUrl(): string {
  const url = process.env.OPTAAS_URL;
  if (!url) throw new Error("OPTAAS_URL is not set: run the tests with `npm test`");
  return url;
}

/** A client of the live server; quick retries, so failure paths do not make the tests slow. */
export function client(options: ClientOptions = {}): Client {
  return new Client({ url: serverUrl(), retry: { retries: 3, backoffMs: 20, maxDelayMs: 2000 }, ...options });
}

/** Run `script` with the repository's Python (the server's code importable); its stdout. */
export function python(script: string, input?: string | Uint8Array): string {
  return execFileSync(serverPython(), ["-c", script], {
    cwd: REPO_ROOT,
    env: { ...process.env, PYTHONPATH: REPO_ROOT },
    input,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
}

/** What the proxy does to one request: forward it (the default), forward it and then cut the
 *  connection instead of answering (the server applied it; the client never hears), hold the
 *  answer back for `ms`, or answer itself without forwarding. */
export type Mischief =
  | { kind: "drop-answer" }
  | { kind: "delay-answer"; ms: number }
  | { kind: "answer"; status: number; headers?: Record<string, string>; body?: string };

export interface SeenRequest {
  method: string;
  path: string;
  idempotencyKey: string | undefined;
  contentType: string | undefined;
  accept: string | undefined;
}

/** A real HTTP proxy in front of the live server, with mischief planned per request. */
export class Proxy {
  readonly seen: SeenRequest[] = [];
  private readonly plans: { matches: (request: SeenRequest) => boolean; mischief: Mischief }[] = [];

  private constructor(
    private readonly server: Server,
    private readonly upstream: URL,
  ) {}

  static async start(upstream: string = serverUrl()): Promise<Proxy> {
    let proxy: Proxy | undefined;
    const server = createServer((request, response) => void proxy!.handle(request, response));
    proxy = new Proxy(server, new URL(upstream));
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The next request that `matches` gets `mischief` (once); plans apply in the order made. */
  plan(matches: (request: SeenRequest) => boolean, mischief: Mischief): void {
    this.plans.push({ matches, mischief });
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((done) => this.server.close(done));
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const seen: SeenRequest = {
      method: request.method ?? "GET",
      path: request.url ?? "/",
      idempotencyKey: header(request, "idempotency-key"),
      contentType: header(request, "content-type"),
      accept: header(request, "accept"),
    };
    this.seen.push(seen);
    const index = this.plans.findIndex((plan) => plan.matches(seen));
    const mischief = index >= 0 ? this.plans.splice(index, 1)[0]!.mischief : undefined;
    if (mischief?.kind === "answer") {
      response.writeHead(mischief.status, mischief.headers ?? {});
      response.end(mischief.body ?? "");
      return;
    }
    const answer = await this.forward(request, Buffer.concat(chunks));
    if (mischief?.kind === "drop-answer") {
      request.socket.destroy(); // the server has answered (so committed); the client gets nothing
      return;
    }
    if (mischief?.kind === "delay-answer") await new Promise((done) => setTimeout(done, mischief.ms));
    if (request.socket.destroyed) return;
    response.writeHead(answer.status, answer.headers);
    response.end(answer.body);
  }

  private forward(
    request: IncomingMessage,
    body: Buffer,
  ): Promise<{ status: number; headers: Record<string, string | string[]>; body: Buffer }> {
    const headers = { ...request.headers, host: this.upstream.host };
    return new Promise((done, fail) => {
      const upstream = httpRequest(
        { host: this.upstream.hostname, port: this.upstream.port, method: request.method, path: request.url, headers },
        (answer) => {
          const parts: Buffer[] = [];
          answer.on("data", (part: Buffer) => parts.push(part));
          answer.on("end", () => {
            const kept = Object.fromEntries(
              Object.entries(answer.headers).filter(
                (entry): entry is [string, string | string[]] =>
                  entry[1] !== undefined && entry[0] !== "transfer-encoding",
              ),
            );
            done({ status: answer.statusCode ?? 502, headers: kept, body: Buffer.concat(parts) });
          });
        },
      );
      upstream.on("error", fail);
      upstream.end(body);
    });
  }
}

function header(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The step path of a session, for proxy plans. */
export function isStep(request: SeenRequest): boolean {
  return request.method === "POST" && /\/v1\/sessions\/[^/]+\/step/.test(request.path);
}

/** Largest |a − b| / max(|b|, tiny) over two arrays of the same length. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`lengths differ: ${a.length} and ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const scale = Math.max(Math.abs(b[i]!), Number.MIN_VALUE);
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / scale);
  }
  return worst;
}
