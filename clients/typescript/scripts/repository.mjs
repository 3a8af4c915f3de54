// Where the optaas repository is, and the Python that runs its server: shared by the type
// generator (scripts/openapi-types.mjs) and the tests' live server (test/live-server.ts).
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** clients/typescript (this file is scripts/repository.mjs, or dist/scripts/ once built). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..").replace(/[\\/]dist$/, "");

/** The repository: clients/typescript's grandparent. */
export const REPO_ROOT = resolve(PACKAGE_ROOT, "..", "..");

/**
 * The Python that can import the server: `OPTAAS_PYTHON`, else the repository's .venv, else python3.
 * @returns {string}
 */
export function serverPython() {
  if (process.env.OPTAAS_PYTHON) return process.env.OPTAAS_PYTHON;
  const venv = join(REPO_ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}
