#!/usr/bin/env node
// The client's types come from the server's own OpenAPI document:
//
//   node scripts/openapi-types.mjs generate   writes src/openapi.ts
//   node scripts/openapi-types.mjs check      fails (exit 1) when src/openapi.ts differs from what
//                                             the server's document generates now
//
// The document is the app factory's (`create_app().openapi()` in app/api/app.py), dumped by the
// repository's Python with every OPTAAS_* variable removed, so the server's defaults decide it (the
// limits it declares follow the configuration). OPTAAS_PYTHON names that Python (default: the
// repository's .venv, else python3); `--url http://…` reads /openapi.json of a running server instead.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";
import { PACKAGE_ROOT, REPO_ROOT, serverPython } from "./repository.mjs";

const TYPES_FILE = join(PACKAGE_ROOT, "src", "openapi.ts");
const HEADER = `// Generated from the optaas server's OpenAPI document by \`npm run generate\`: do not edit.
// \`npm run check-types\` (run by the tests) fails when this file and the server's schema differ.

`;
const DUMP_OPENAPI = [
  "import json, sys",
  "from app.api.app import create_app",
  "json.dump(create_app().openapi(), sys.stdout)",
].join("\n");

function documentFromPython() {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("OPTAAS_")));
  env.PYTHONPATH = [REPO_ROOT, process.env.PYTHONPATH].filter(Boolean).join(":");
  const text = execFileSync(serverPython(), ["-c", DUMP_OPENAPI], {
    cwd: REPO_ROOT,
    env,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(text);
}

async function documentFromServer(url) {
  const response = await fetch(new URL("/openapi.json", url));
  if (!response.ok) throw new Error(`${url}/openapi.json answered ${response.status}`);
  return response.json();
}

const NESTED_NUMBERS = "NestedNumbers";

/** A number or nested arrays of them: the JSON Schema of a tensor, which refers to itself. */
function isNestedNumbers(schema, path) {
  const kinds = schema.anyOf ?? [];
  return (
    kinds.length === 2 &&
    kinds.some((kind) => kind.type === "number") &&
    kinds.some((kind) => kind.type === "array" && kind.items?.$ref === path)
  );
}

/**
 * Two schemas TypeScript needs told: binary bodies (safetensors files) are bytes, not the
 * `string` of JSON Schema; and a tensor (`number | Tensor[]`, which openapi-typescript writes as
 * an indexed access to itself, a circular type) is the recursive alias `NestedNumbers`.
 */
function transform(schema, options) {
  if (schema.type === "string" && schema.format === "binary") {
    return ts.factory.createTypeReferenceNode("Uint8Array");
  }
  if (isNestedNumbers(schema, options.path)) return ts.factory.createTypeReferenceNode(NESTED_NUMBERS);
  return undefined;
}

async function typesText(document) {
  const nodes = await openapiTS(document, {
    transform,
    inject: `export type ${NESTED_NUMBERS} = number | ${NESTED_NUMBERS}[];\n`,
    // Fields with defaults are optional in requests (the server fills them in), as the schema says.
    defaultNonNullable: false,
    silent: true,
  });
  return HEADER + astToString(nodes);
}

async function main(argv) {
  const [command, ...rest] = argv;
  const urlIndex = rest.indexOf("--url");
  const document = urlIndex >= 0 ? await documentFromServer(rest[urlIndex + 1]) : documentFromPython();
  const text = await typesText(document);
  if (command === "generate") {
    writeFileSync(TYPES_FILE, text);
    console.log(`wrote ${TYPES_FILE} (${text.length} characters)`);
  } else if (command === "check") {
    const committed = existsSync(TYPES_FILE) ? readFileSync(TYPES_FILE, "utf8") : "";
    if (committed !== text) {
      const ours = committed.split("\n");
      const theirs = text.split("\n");
      const line = ours.findIndex((value, index) => value !== theirs[index]);
      console.error(
        `src/openapi.ts is out of date with the server's OpenAPI document (first difference at ` +
          `line ${line + 1}:\n  committed: ${ours[line] ?? "(end of file)"}\n  generated: ` +
          `${theirs[line] ?? "(end of file)"})\nRun \`npm run generate\` and commit the result.`,
      );
      process.exit(1);
    }
    console.log("src/openapi.ts matches the server's OpenAPI document");
  } else {
    console.error("usage: openapi-types.mjs generate|check [--url http://host:port]");
    process.exit(2);
  }
}

await main(process.argv.slice(2));
