/**
 * optaas-client: the optimizer of a training run kept by an optaas server, from TypeScript.
 *
 * `Client` and `Session` speak the HTTP contract through `openapi-fetch` over types generated
 * from the server's OpenAPI document (`openapi.ts`); `RemoteOptimizer` steps named typed arrays
 * in place; `encodeSafetensors`/`decodeSafetensors` are the binary form; errors are typed.
 */
export * from "./client.js";
export * from "./errors.js";
export * from "./exports.js";
export * from "./optimizer.js";
export * from "./safetensors.js";
export * from "./tensors.js";
export { RETRIED_STATUSES, RetryPolicy, Transport } from "./transport.js";
export type { Call, Fetch, RetryOptions, TransportOptions } from "./transport.js";
export type { components, paths } from "./openapi.js";
