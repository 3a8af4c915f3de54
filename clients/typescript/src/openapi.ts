// Generated from the optaas server's OpenAPI document by `npm run generate`: do not edit.
// `npm run check-types` (run by the tests) fails when this file and the server's schema differ.

export type NestedNumbers = number | NestedNumbers[];
export interface paths {
    "/v1/sessions": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Create a session
         * @description A new optimisation run at t = 0 with θ₀ = `params`. Keep the `token`: it is not stored.
         *
         *     Large models: send θ₀ as a safetensors file (`Content-Type: application/vnd.safetensors`),
         *     tensors by name, with the rest of the JSON body as JSON text under `optaas` in its
         *     `__metadata__`. With an `Idempotency-Key` (unique per API key, or per address on a server
         *     without keys), a retry gets the same session back.
         */
        post: operations["sessions-create_session"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/sessions/{session_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Read a session
         * @description Its config with every default filled in, `step`, shapes, dtype, timestamps, last loss.
         */
        get: operations["sessions-get_session"];
        put?: never;
        post?: never;
        /**
         * Delete a session
         * @description The session and everything stored for it (its idempotency records included).
         */
        delete: operations["sessions-delete_session"];
        options?: never;
        head?: never;
        /**
         * Change hyper-parameters mid-run
         * @description Change the optimizer's hyper-parameters, the schedule, clipping, `nonfinite`, `groups`,
         *     `accumulate` or the name; t, θ and the state are kept, and the change is recorded in the
         *     history.
         *
         *     The body is a JSON merge patch (RFC 7396) of the session's config: `{"optimizer": {"lr":
         *     0.005}}` changes lr alone; `null` restores a field's default; an object with another `type`
         *     replaces the old one whole (a new schedule). The optimizer's `type` cannot change (422
         *     `optimizer-type-change`: fork the session instead). Steps are applied under the old config
         *     or the new one, never a mix. With `If-Match` the change is made only at that step (else
         *     412). Pending accumulated gradients are kept and join the next step.
         */
        patch: operations["sessions-patch_session"];
        trace?: never;
    };
    "/v1/sessions/{session_id}/step": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Apply one gradient
         * @description θ ← θ − η_t/(σ_t + eps) · m_t for the posted gradient; answers with the new θ.
         *
         *     The gradient must match every parameter's name and shape (unless `partial`). Steps on one
         *     session are applied one at a time; the `ETag` header carries the new step count. With
         *     `If-Match` the step is applied only at that step (else 412); with an `Idempotency-Key` it
         *     is applied once, and a retry gets the same answer (`Idempotent-Replayed: true`).
         *
         *     With `accumulate` K > 1, the first K−1 gradients of a step answer 202 with how many are
         *     still `missing` (and `Location`: where to wait for the step); the K-th applies their mean
         *     and answers 200 as above.
         *
         *     Binary form: send the gradients as a safetensors file (`Content-Type:
         *     application/vnd.safetensors`, tensors by name, `loss` and `partial` in `__metadata__`);
         *     ask for `Accept: application/vnd.safetensors` to get θ back as one (`step`, `lr`,
         *     `grad_norm`, `update_norm`, `skipped` in its `__metadata__`). Either may go with JSON.
         *
         *     Sparse rows (embedding tables; `sparse_adam`, `adagrad` and `sgd` without momentum): a
         *     tensor's gradient may be `{"rows": [i, …], "values": [[…], …]}` (in a file: the integer
         *     vector `rows/<tensor>` beside `<tensor>`), repeated rows summed. The answer then holds,
         *     for that tensor, only the rows the step changed, in the same form (`?return=full`: whole).
         */
        post: operations["sessions-step_session"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/sessions/{session_id}/params": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Read the parameters
         * @description θ_t in the form the session was created with, and the step count t (`?for=eval`: the
         *     weights to evaluate, see below).
         *
         *     With `wait_for_step`, the answer waits until the session has reached that step — say the
         *     step a worker's accumulated gradient is part of — or until `timeout`, when it is a 408 that
         *     says at which step the session is (and, while gradients are being accumulated, how many
         *     are still missing). Waiting holds no database connection: the session's step is read ten
         *     times a second, so it works across server processes.
         *
         *     With `Accept: application/vnd.safetensors`: a safetensors file of θ_t by tensor name (the
         *     single form's tensor is `params`), `step` in its `__metadata__`.
         */
        get: operations["sessions-get_params"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/sessions/{session_id}/fork": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Fork a session
         * @description A new session — new id, new token — with the same θ, state, t and config; the body
         *     (optional) overrides the config as a PATCH would, the optimizer's type included (slots the
         *     new optimizer keeps start fresh). Both sessions then go their own ways.
         *
         *     Needs the source's token, and `X-API-Key` when the server has API keys (it creates a
         *     session). With `If-Match` the fork is made only at that step; with an `Idempotency-Key`
         *     (unique among the source's keys) a retry gets the same fork back.
         */
        post: operations["sessions-fork_session"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/sessions/{session_id}/state": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Export a session
         * @description Everything needed to continue the run elsewhere: the config with every default, t, θ and
         *     every state slot under torch's names (`exp_avg`, `exp_avg_sq`, `momentum_buffer`, …, and
         *     each tensor's own `step`), the schedule's state and the last loss.
         *
         *     JSON by default; with `Accept: application/vnd.safetensors` a safetensors file whose
         *     tensors are `param/<tensor>` (θ) and `<slot>/<tensor>`, the rest in its `__metadata__`.
         *     `POST /v1/sessions/import` takes either back. Gradients pending in an accumulation are not
         *     part of an export.
         */
        get: operations["sessions-get_state"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/sessions/import": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Import a session
         * @description A new session (new id and token) from an export (`GET …/state`), in JSON or as a
         *     safetensors file: it continues the run exactly where the export left it.
         *
         *     Everything is checked first, and a problem is a 422 that names it, with nothing created:
         *     the format, the config (as for a creation), every tensor's θ and exactly the state slots
         *     its optimizer keeps (names, shapes, dtype, finite values), step counts from 0 to t. A body
         *     that is no JSON or safetensors file is a 400. Needs `X-API-Key` when the server has API
         *     keys; with an `Idempotency-Key` (unique per API key, or per address on a server without
         *     keys) a retry gets the same session back.
         */
        post: operations["sessions-import_session"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/sessions/{session_id}/history": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Read the history
         * @description Every step the session took — `{step, lr, loss, grad_norm, update_norm, skipped, at,
         *     duration_ms}`, skipped ones included — and every change of its configuration, in order.
         *
         *     Page with `after`: start at 0, then pass `next` until it is null. To follow a running
         *     session, poll with `after` = the `seq` of the last record seen. Sessions keep the newest
         *     `OPTAAS_HISTORY_MAX_RECORDS` records (older ones are pruned).
         */
        get: operations["history-get_history"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/schedules/preview": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Preview a schedule
         * @description `[η_0, …, η_{N−1}]` for `schedule` at base rate `lr`: the rates steps 0 … N−1 of a
         *     session with this schedule would use. No session or token needed.
         *
         *     `reduce_on_plateau` is fed no losses here, so it previews as constant. An invalid schedule
         *     is a 422 naming the field (e.g. `schedule.then.total_steps`). Previews are rate limited
         *     per API key (per address without one): 429 with `Retry-After` above the limit.
         */
        post: operations["schedules-preview_schedule"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/healthz": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Liveness
         * @description The process answers HTTP.
         */
        get: operations["health-healthz"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        /**
         * Liveness (HEAD)
         * @description The process answers HTTP.
         */
        head: operations["health-healthz_head"];
        patch?: never;
        trace?: never;
    };
    "/readyz": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Readiness
         * @description The database answers a query.
         */
        get: operations["health-readyz"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        /**
         * Readiness (HEAD)
         * @description The database answers a query.
         */
        head: operations["health-readyz_head"];
        patch?: never;
        trace?: never;
    };
    "/metrics": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Prometheus metrics
         * @description Steps by optimizer type and outcome (`optaas_steps_total`), step latency
         *     (`optaas_step_latency_seconds`), request body sizes by route (`optaas_request_body_bytes`),
         *     error answers by status and problem type (`optaas_rejections_total`) and the number of
         *     sessions stored (`optaas_sessions`). Counts are summed over all server processes.
         */
        get: operations["operations-get_metrics"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        /**
         * ASGD
         * @description ASGD: SGD with its own decaying rate η_t = lr/(1 + λ·lr·t)^α and a decay θ·(1 − λ·η_t),
         *     averaging the iterates after step t0 (`ax`, the weights to evaluate):
         *
         *     θ ← θ·(1 − λ·η) − η·g_t,   ax ← ax + μ·(θ − ax),   μ = 1/max(1, t − t0).
         *
         *     Reference: torch.optim.ASGD.
         */
        ASGD: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "asgd";
            /**
             * Lr
             * @default 0.01
             */
            lr?: number;
            /**
             * Lambd
             * @default 0.0001
             */
            lambd?: number;
            /**
             * Alpha
             * @default 0.75
             */
            alpha?: number;
            /**
             * T0
             * @default 1000000
             */
            t0?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * AdaBelief
         * @description AdaBelief (optax.adabelief): Adam whose σ² tracks (g − m)², the gradient's deviation from
         *     its average (see `scale_by_belief`).
         *
         *     Reference: optax.adabelief.
         */
        AdaBelief: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "adabelief";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * B1
             * @default 0.9
             */
            b1?: number;
            /**
             * B2
             * @default 0.999
             */
            b2?: number;
            /**
             * Eps
             * @default 1e-16
             */
            eps?: number;
            /**
             * Eps Root
             * @default 1e-16
             */
            eps_root?: number;
            /**
             * Nesterov
             * @default false
             */
            nesterov?: boolean;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Adadelta
         * @description Adadelta: σ_t = sqrt(E[g²]_t + eps) / sqrt(E[Δ²]_{t−1} + eps), m_t = g_t, θ ← θ − η_t·Δ_t
         *     with Δ_t = g_t/σ_t (both averages with decay ρ).
         *
         *     Reference: torch.optim.Adadelta.
         */
        Adadelta: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "adadelta";
            /**
             * Lr
             * @default 1
             */
            lr?: number;
            /**
             * Rho
             * @default 0.9
             */
            rho?: number;
            /**
             * Eps
             * @default 0.000001
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Adafactor
         * @description Adafactor (torch's variant): σ from a factored second moment (row and column factors for
         *     tensors of 2+ dims), updates clipped to RMS ≤ d, a step relative to θ's scale:
         *
         *     u_t = g_t / max(sqrt(V̂_t), eps1),  û_t = u_t / max(1, RMS(u_t)/d)
         *     θ ← θ·(1 − η_t·λ) − max(eps2, RMS(θ))·min(η_t, 1/sqrt(t))·û_t     (see `tensorwise`).
         *
         *     Reference: torch.optim.Adafactor.
         */
        Adafactor: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "adafactor";
            /**
             * Lr
             * @default 0.01
             */
            lr?: number;
            /**
             * Beta2 Decay
             * @default -0.8
             */
            beta2_decay?: number;
            /**
             * Eps
             * @default [
             *       null,
             *       0.001
             *     ]
             */
            eps?: [
                number | null,
                number
            ];
            /**
             * D
             * @default 1
             */
            d?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Adagrad
         * @description Adagrad: m_t = g_t, σ_t = sqrt(Σ g²) (torch) or sqrt(Σ g² / t) (`accumulator: "mean"`,
         *     the lecture's form); θ ← θ − η_t/(1 + (t−1)·lr_decay) · g_t/(σ_t + eps).
         *
         *     Reference: torch.optim.Adagrad.
         */
        Adagrad: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "adagrad";
            /**
             * Lr
             * @default 0.01
             */
            lr?: number;
            /**
             * Lr Decay
             * @default 0
             */
            lr_decay?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Initial Accumulator Value
             * @default 0
             */
            initial_accumulator_value?: number;
            /**
             * Eps
             * @default 1e-10
             */
            eps?: number;
            /**
             * Accumulator
             * @default sum
             * @enum {string}
             */
            accumulator?: "sum" | "mean";
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Adam
         * @description Adam, RMSprop plus momentum with bias correction — momentum first, then σ:
         *
         *     m̂_t = EMA_β1(g)/(1 − β1^t),  σ_t = sqrt(EMA_β2(g²)) / sqrt(1 − β2^t)  (running max: amsgrad)
         *     θ ← θ − η_t · m̂_t/(σ_t + eps)  (− η_t·λ·θ when decoupled, else λ·θ is added to g).
         *
         *     Reference: torch.optim.Adam.
         */
        Adam: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "adam";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Amsgrad
             * @default false
             */
            amsgrad?: boolean;
            /**
             * Decoupled Weight Decay
             * @default false
             */
            decoupled_weight_decay?: boolean;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * AdamW
         * @description AdamW: Adam with decoupled weight decay, θ ← θ·(1 − η_t·λ) − η_t·m̂_t/(σ_t + eps).
         *
         *     Reference: torch.optim.AdamW.
         */
        AdamW: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "adamw";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0.01
             */
            weight_decay?: number;
            /**
             * Amsgrad
             * @default false
             */
            amsgrad?: boolean;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Adamax
         * @description Adamax: Adam with σ an exponentially weighted infinity norm (no eps added after it):
         *
         *     σ_t = max(β2·σ_{t−1}, |g_t| + eps),  θ ← θ − η_t · EMA_β1(g)/(1 − β1^t) / σ_t.
         *
         *     Reference: torch.optim.Adamax.
         */
        Adamax: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "adamax";
            /**
             * Lr
             * @default 0.002
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Adan
         * @description Adan (optax.adan): Nesterov momentum from gradient differences (see `scale_by_adan`),
         *     plus λ·θ, times −η_t. `mask` as LAMB's.
         *
         *     Reference: optax.adan.
         */
        Adan: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "adan";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * B1
             * @default 0.98
             */
            b1?: number;
            /**
             * B2
             * @default 0.92
             */
            b2?: number;
            /**
             * B3
             * @default 0.99
             */
            b3?: number;
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Eps Root
             * @default 1e-8
             */
            eps_root?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /** Mask */
            mask?: boolean | null;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * ChangeRecord
         * @description A change of the session's configuration (PATCH): each changed field, old and new.
         */
        ChangeRecord: {
            /**
             * Seq
             * @description The record's number in this session's history (the cursor).
             */
            seq: number;
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            kind: "change";
            /**
             * Step
             * @description t when the change was made.
             */
            step: number;
            /**
             * At
             * Format: date-time
             */
            at: string;
            /**
             * Changes
             * @description Dotted field path (e.g. `optimizer.lr`) → its old and new value.
             */
            changes: {
                [key: string]: components["schemas"]["FieldChange"];
            };
        };
        /** Constant */
        Constant: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "constant";
        };
        /**
         * Cosine
         * @description torch CosineAnnealingLR, with the absolute floor `min_lr`.
         */
        Cosine: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "cosine";
            /**
             * Total Steps
             * @example 1000
             */
            total_steps: number;
            /**
             * Min Lr
             * @default 0
             */
            min_lr?: number;
        };
        /**
         * CosineRestarts
         * @description torch CosineAnnealingWarmRestarts.
         */
        CosineRestarts: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "cosine_restarts";
            /**
             * T 0
             * @example 100
             */
            t_0: number;
            /**
             * T Mult
             * @default 1
             */
            t_mult?: number;
            /**
             * Min Lr
             * @default 0
             */
            min_lr?: number;
        };
        /** CreatedSession */
        CreatedSession: {
            /**
             * Id
             * Format: uuid
             */
            id: string;
            /** Name */
            name: string | null;
            /**
             * Dtype
             * @enum {string}
             */
            dtype: "float32" | "float64";
            /**
             * Layout
             * @description `single`: params is one array; `named`: an object of named arrays.
             * @enum {string}
             */
            layout: "single" | "named";
            /**
             * Shapes
             * @description Tensor name → shape, in order.
             */
            shapes: {
                [key: string]: number[];
            };
            /** Optimizer */
            optimizer: components["schemas"]["SGD"] | components["schemas"]["Adagrad"] | components["schemas"]["RMSprop"] | components["schemas"]["Adam"] | components["schemas"]["AdamW"] | components["schemas"]["Adamax"] | components["schemas"]["NAdam"] | components["schemas"]["RAdam"] | components["schemas"]["Adadelta"] | components["schemas"]["Adafactor"] | components["schemas"]["Muon"] | components["schemas"]["Rprop"] | components["schemas"]["ASGD"] | components["schemas"]["SparseAdam"] | components["schemas"]["Lion"] | components["schemas"]["Yogi"] | components["schemas"]["LAMB"] | components["schemas"]["LARS"] | components["schemas"]["AdaBelief"] | components["schemas"]["NovoGrad"] | components["schemas"]["Adan"] | components["schemas"]["ScheduleFreeAdamW"] | components["schemas"]["ScheduleFreeSGD"] | components["schemas"]["Prodigy"] | components["schemas"]["DAdaptAdam"] | components["schemas"]["DAdaptSGD"] | components["schemas"]["DAdaptAdaGrad"] | components["schemas"]["DoG"] | components["schemas"]["LDoG"] | components["schemas"]["Custom"];
            /** Schedule */
            schedule?: components["schemas"]["Constant"] | components["schemas"]["StepDecay"] | components["schemas"]["MultiStep"] | components["schemas"]["Exponential"] | components["schemas"]["InverseSqrt"] | components["schemas"]["Linear"] | components["schemas"]["Polynomial"] | components["schemas"]["Cosine"] | components["schemas"]["CosineRestarts"] | components["schemas"]["OneCycle"] | components["schemas"]["Noam"] | components["schemas"]["PiecewiseConstant"] | components["schemas"]["Warmup"] | components["schemas"]["Sequential"] | components["schemas"]["ReduceOnPlateau"];
            /**
             * Clip Grad Norm
             * @description Scale g by min(1, max_norm / (‖g‖₂ + 1e-6)), torch's rule.
             */
            clip_grad_norm?: number | null;
            /**
             * Clip Grad Value
             * @description Clamp g to ±value.
             */
            clip_grad_value?: number | null;
            /**
             * Nonfinite
             * @description A gradient with NaN/±Inf: `reject` (422) or `skip` (200, nothing changes).
             * @default reject
             * @enum {string}
             */
            nonfinite?: "reject" | "skip";
            /**
             * Groups
             * @description Per-tensor overrides; the first group that matches wins.
             */
            groups?: components["schemas"]["Group"][] | null;
            /**
             * Accumulate
             * @description K: gradients averaged per step. With K > 1 the first K−1 posts of a step answer 202 (how many are still missing) and the K-th applies their mean.
             * @default 1
             */
            accumulate?: number;
            /**
             * Step
             * @description t: updates applied so far.
             */
            step: number;
            /**
             * Accumulated
             * @description Gradients received toward the next step (`accumulate` > 1); 0 otherwise.
             * @default 0
             */
            accumulated?: number;
            /**
             * Lr
             * @description η_t: the learning rate the next step will use (null if not finite).
             */
            lr: number | null;
            /** Last Loss */
            last_loss: number | null;
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
            /**
             * Updated At
             * Format: date-time
             */
            updated_at: string;
            /**
             * Token
             * @description Bearer token for this session. Shown once; keep it.
             */
            token: string;
        };
        /**
         * Custom
         * @description The general form itself, θ ← θ − η_t/(σ_t + eps) · m_t, with m and σ both from the
         *     (pre-processed) gradient g_t:
         *
         *     momentum {beta, dampening=0, bias_correction=false}: m_t = β·m_{t−1} + (1 − dampening)·g_t
         *         from m_0 = 0, divided by (1 − β^t) with bias_correction; null: m_t = g_t.
         *     sigma {kind, alpha, init="zero", bias_correction=false}: σ_t² = Σ g² ("sum"), Σ g²/t
         *         ("mean") or v_t = α·v_{t−1} + (1 − α)·g_t² ("ema", init "first_grad": v_1 = g_1²;
         *         bias_correction: σ_t² = v_t/(1 − α^t)); null: σ_t = 1 and eps is not added.
         *
         *     So momentum {β1, dampening β1, bias_correction} + sigma {ema, β2, bias_correction} is Adam,
         *     sigma {ema, α} alone is RMSprop, momentum {μ} alone is SGD with momentum.
         *
         *     Reference: the formula θ ← θ − η_t/(σ_t + eps)·m_t.
         */
        Custom: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "custom";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            momentum?: components["schemas"]["CustomMomentum"] | null;
            sigma?: components["schemas"]["CustomSigma"] | null;
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * CustomMomentum
         * @description The blocks of `custom`'s `momentum` field.
         */
        CustomMomentum: {
            /** Beta */
            beta: number;
            /**
             * Dampening
             * @default 0
             */
            dampening?: number;
            /**
             * Bias Correction
             * @default false
             */
            bias_correction?: boolean;
        };
        /**
         * CustomSigma
         * @description The σ-block of `custom`'s `sigma` field, waiting for `eps`.
         */
        CustomSigma: {
            /**
             * Kind
             * @enum {string}
             */
            kind: "sum" | "mean" | "ema";
            /** Alpha */
            alpha?: number | null;
            /**
             * Init
             * @default zero
             * @enum {string}
             */
            init?: "zero" | "first_grad";
            /**
             * Bias Correction
             * @default false
             */
            bias_correction?: boolean;
        };
        /**
         * DAdaptAdaGrad
         * @description AdaGrad with D-Adapted step size, in its dual-averaging form (slots `alphak` from 1e-6,
         *     `sk`, `x0`; globals `d`, `gsq_weighted`, `sksq_weighted`, `skl1`), dlr = d·lr,
         *     ρ = sqrt(alphak) + eps:
         *
         *         alphak ← alphak + g²,   sk ← sk + dlr·g
         *         gsq_weighted ← gsq_weighted + dlr²·Σ_tensors Σ g²/ρ
         *         sksq_weighted = Σ_tensors Σ sk²/ρ,   skl1 = Σ_tensors ‖sk‖₁   (kept as running sums of
         *                                                               each step's change, as the reference)
         *         d̂ = (sksq_weighted − gsq_weighted)/skl1,   d ← max(d, min(d̂, d·growth_rate))
         *         z = x0 − sk/ρ,   θ ← momentum·θ + (1 − momentum)·z   (θ ← z when momentum = 0)
         *
         *     (g includes λ·θ, with the group's λ). lr is the session's: the reference reads the first
         *     group's. A step with skl1 = 0 moves nothing, as the reference returns early.
         *
         *     Reference: dadaptation.DAdaptAdaGrad.
         */
        DAdaptAdaGrad: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "dadapt_adagrad";
            /**
             * Lr
             * @default 1
             */
            lr?: number;
            /**
             * Momentum
             * @default 0
             */
            momentum?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Eps
             * @default 0.000001
             */
            eps?: number;
            /**
             * D0
             * @default 0.000001
             */
            d0?: number;
            /** Growth Rate */
            growth_rate?: number | null;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * DAdaptAdam
         * @description Adam with D-Adapted step size (slots `exp_avg`, `exp_avg_sq`, `s`; globals `d`,
         *     `numerator_weighted`, `k`), r a group's `layer_scale`:
         *
         *         dlr = d·lr·(sqrt(1 − β2^(k+1))/(1 − β1^(k+1)) if use_bias_correction else 1)
         *         numerator_weighted ← √β2·numerator_weighted
         *                              + (1 − √β2)·Σ_tensors r·dlr·⟨g, s/(sqrt(v) + eps)⟩   (v before g)
         *         m ← β1·m + r·dlr(1 − β1)·g,   v ← β2·v + (1 − β2)·g²,   s ← √β2·s + dlr(1 − √β2)·g
         *         d̂ = numerator_weighted / ((1 − √β2)·Σ_tensors r·‖s‖₁),   d ← max(d, min(d̂, d·growth_rate))
         *         θ ← θ − dlr·λ·θ (decouple) − m/(sqrt(v) + eps)
         *
         *     (λ·θ added to g when not decoupled). A group with lr 0 sits out; others share the session's
         *     lr. A step with Σ‖s‖₁ = 0 moves nothing, as the reference returns early.
         *
         *     Reference: dadaptation.DAdaptAdam.
         */
        DAdaptAdam: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "dadapt_adam";
            /**
             * Lr
             * @default 1
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Decouple
             * @default false
             */
            decouple?: boolean;
            /**
             * Use Bias Correction
             * @default false
             */
            use_bias_correction?: boolean;
            /**
             * D0
             * @default 0.000001
             */
            d0?: number;
            /** Growth Rate */
            growth_rate?: number | null;
            /**
             * Layer Scale
             * @default 1
             */
            layer_scale?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * DAdaptSGD
         * @description SGD with D-Adapted step size, in its dual-averaging form (slots `s`, `x0`; globals `d`,
         *     `numerator_weighted`, `g0_norm`), ck = 1 − momentum:
         *
         *         g0_norm = ‖g_0‖ over all tensors (the first step's gradient, before weight decay)
         *         dlr = d·lr/g0_norm
         *         numerator_weighted ← numerator_weighted + dlr·Σ_tensors ⟨g, s⟩,   s ← s + dlr·g
         *         d̂ = 2·numerator_weighted/sqrt(Σ_tensors ‖s‖²),   d ← max(d, min(d̂, d·growth_rate))
         *         z = x0 − s,   θ ← (1 − ck)·θ + ck·z
         *
         *     (g includes λ·θ, with the session's λ). The reference's `z` is not kept: it is x0 − s.
         *     A group with lr 0 sits out the sums; others share the session's lr. Where the reference
         *     divides by zero — a first gradient of norm 0, or Σ‖s‖² = 0 — the step moves nothing (and
         *     a first step is tried again with the next gradient).
         *
         *     Reference: dadaptation.DAdaptSGD.
         */
        DAdaptSGD: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "dadapt_sgd";
            /**
             * Lr
             * @default 1
             */
            lr?: number;
            /**
             * Momentum
             * @default 0
             */
            momentum?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * D0
             * @default 0.000001
             */
            d0?: number;
            /** Growth Rate */
            growth_rate?: number | null;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * DoG
         * @description Distance over Gradients: SGD at η = distance travelled / root of the gradients' squared
         *     norms, each group's tensors taken as one vector (slot `init_buffer`, θ_0; the group's
         *     globals `<group>.rbar`, `<group>.G`, 0-d in the session's dtype):
         *
         *         rbar_0 = reps_rel·(1 + ‖θ_0‖),   rbar_t = max(rbar_{t−1}, ‖θ_t − θ_0‖)
         *         G_0 = ‖g_0‖² + eps,               G_t = G_{t−1} + ‖g_t‖²
         *         η_t = lr·rbar_t/sqrt(G_t)   (the step's `lr`; η_0 = init_eta where given)
         *         θ ← θ − η_t·g                (g includes λ·θ)
         *
         *     `init_eta` sets rbar_0 = 0 (the reference's constructor sets reps_rel to 0 with it): here in
         *     any group whose `init_eta` is set. Every tensor's gradient is needed in each step (the
         *     reference's norms take them all), so a partial step is refused.
         *
         *     Reference: dog-optimizer DoG.
         */
        DoG: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "dog";
            /**
             * Reps Rel
             * @default 0.000001
             */
            reps_rel?: number;
            /**
             * Lr
             * @default 1
             */
            lr?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /** Init Eta */
            init_eta?: number | null;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Exponential
         * @description `gamma^t`.
         */
        Exponential: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "exponential";
            /**
             * Gamma
             * @example 0.99
             */
            gamma: number;
        };
        /** FieldChange */
        FieldChange: {
            /** Old */
            old: unknown;
            /** New */
            new: unknown;
        };
        /**
         * Group
         * @description Tensors whose names match one of the globs, and how they are stepped: with overrides of
         *     the session's optimizer's hyper-parameters (any of its fields beside `match`, e.g.
         *     `"lr": 1e-4`), or with an optimizer of their own (`optimizer`, a whole spec, and nothing
         *     else beside `match`: optax's `multi_transform`). A tensor takes one optimizer type: groups
         *     of two types matching it are refused.
         */
        Group: {
            /**
             * Match
             * @description Name globs, e.g. `encoder.*`.
             */
            match: string[];
            /**
             * Optimizer
             * @description An optimizer of the group's own, any type, its fields' defaults its own (e.g. `{"type": "muon", "lr": 0.02}` for `*.weight`). PATCH may change its hyper-parameters but not its type (fork the session instead).
             */
            optimizer?: (components["schemas"]["SGD"] | components["schemas"]["Adagrad"] | components["schemas"]["RMSprop"] | components["schemas"]["Adam"] | components["schemas"]["AdamW"] | components["schemas"]["Adamax"] | components["schemas"]["NAdam"] | components["schemas"]["RAdam"] | components["schemas"]["Adadelta"] | components["schemas"]["Adafactor"] | components["schemas"]["Muon"] | components["schemas"]["Rprop"] | components["schemas"]["ASGD"] | components["schemas"]["SparseAdam"] | components["schemas"]["Lion"] | components["schemas"]["Yogi"] | components["schemas"]["LAMB"] | components["schemas"]["LARS"] | components["schemas"]["AdaBelief"] | components["schemas"]["NovoGrad"] | components["schemas"]["Adan"] | components["schemas"]["ScheduleFreeAdamW"] | components["schemas"]["ScheduleFreeSGD"] | components["schemas"]["Prodigy"] | components["schemas"]["DAdaptAdam"] | components["schemas"]["DAdaptSGD"] | components["schemas"]["DAdaptAdaGrad"] | components["schemas"]["DoG"] | components["schemas"]["LDoG"] | components["schemas"]["Custom"]) | null;
        } & {
            [key: string]: unknown;
        };
        /** Health */
        Health: {
            /** Status */
            status: string;
        };
        /** HistoryPage */
        HistoryPage: {
            /**
             * Records
             * @description In the order they happened (by `seq`).
             */
            records: (components["schemas"]["StepRecord"] | components["schemas"]["ChangeRecord"])[];
            /**
             * Next
             * @description Pass as `after` for the next page; null when this page reached the newest record (poll later with `after` = the last record's `seq`).
             */
            next: number | null;
        };
        /**
         * InverseSqrt
         * @description `1/sqrt(t+1)`.
         */
        InverseSqrt: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "inverse_sqrt";
        };
        /**
         * LAMB
         * @description LAMB (optax.lamb): Adam's ratio plus λ·θ, scaled per tensor by the trust ratio
         *     ‖θ‖/‖u‖, then by −η_t. `mask` false leaves the weight decay out (optax's mask, for all the
         *     group's tensors; null or true: decay them).
         *
         *     Reference: optax.lamb.
         */
        LAMB: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "lamb";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * B1
             * @default 0.9
             */
            b1?: number;
            /**
             * B2
             * @default 0.999
             */
            b2?: number;
            /**
             * Eps
             * @default 0.000001
             */
            eps?: number;
            /**
             * Eps Root
             * @default 0
             */
            eps_root?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /** Mask */
            mask?: boolean | null;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * LARS
         * @description LARS (optax.lars): g + λ·θ, scaled per tensor by c·‖θ‖/(‖g + λθ‖ + eps), by −η_t, then
         *     momentum (optax's `trace`, slot `trace`, after the rate). The masks, false, leave the decay
         *     or the trust ratio out for the group's tensors.
         *
         *     Reference: optax.lars.
         */
        LARS: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "lars";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Weight Decay Mask
             * @default true
             */
            weight_decay_mask?: boolean;
            /**
             * Trust Coefficient
             * @default 0.001
             */
            trust_coefficient?: number;
            /**
             * Eps
             * @default 0
             */
            eps?: number;
            /**
             * Trust Ratio Mask
             * @default true
             */
            trust_ratio_mask?: boolean;
            /**
             * Momentum
             * @default 0.9
             */
            momentum?: number;
            /**
             * Nesterov
             * @default false
             */
            nesterov?: boolean;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * LDoG
         * @description Layer-wise DoG: `dog`'s rule for each tensor on its own; `<group>.rbar` and `<group>.G`
         *     are 1-d, one entry per tensor of the group (in parameter order), and so is η. The step's
         *     `lr` is the mean η over the first group's elements (each tensor weighted by its size).
         *
         *     Reference: dog-optimizer LDoG.
         */
        LDoG: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "ldog";
            /**
             * Reps Rel
             * @default 0.000001
             */
            reps_rel?: number;
            /**
             * Lr
             * @default 1
             */
            lr?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /** Init Eta */
            init_eta?: number | null;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Linear
         * @description torch LinearLR.
         */
        Linear: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "linear";
            /**
             * Start Factor
             * @default 0.3333333333333333
             */
            start_factor?: number;
            /**
             * End Factor
             * @default 1
             */
            end_factor?: number;
            /**
             * Total Steps
             * @default 5
             */
            total_steps?: number;
        };
        /**
         * Lion
         * @description Lion (Chen et al. 2023, optax's `lion`): σ_t = |c_t|, the sign of an interpolation,
         *
         *     c_t = β1·m_{t−1} + (1 − β1)·g_t,   θ ← θ − η_t·(sign(c_t) + λ·θ),
         *     m_t = β2·m_{t−1} + (1 − β2)·g_t.   Weight decay is decoupled, as in the paper.
         *
         *     Reference: optax.lion (the paper's rule).
         */
        Lion: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "lion";
            /**
             * Lr
             * @default 0.0001
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.99
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * MultiStep
         * @description `gamma^(number of milestones ≤ t)`.
         */
        MultiStep: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "multistep";
            /**
             * Milestones
             * @example [
             *       300,
             *       600,
             *       900
             *     ]
             */
            milestones: number[];
            /**
             * Gamma
             * @default 0.1
             */
            gamma?: number;
        };
        /**
         * Muon
         * @description Muon, for 2-D tensors: momentum B_t = lerp(B_{t−1}, g_t, 1 − μ) (nesterov: lerp(g_t, B_t,
         *     μ)), orthogonalised by `ns_steps` Newton–Schulz iterations in the session's dtype, then
         *
         *     θ ← θ·(1 − η_t·λ) − η_t·r(shape)·NS(B̃_t)     (r: `adjust_lr_fn`, see `tensorwise`).
         *
         *     Reference: torch.optim.Muon.
         */
        Muon: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "muon";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * Weight Decay
             * @default 0.1
             */
            weight_decay?: number;
            /**
             * Momentum
             * @default 0.95
             */
            momentum?: number;
            /**
             * Nesterov
             * @default true
             */
            nesterov?: boolean;
            /**
             * Ns Coefficients
             * @default [
             *       3.4445,
             *       -4.775,
             *       2.0315
             *     ]
             */
            ns_coefficients?: [
                number,
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-7
             */
            eps?: number;
            /**
             * Ns Steps
             * @default 5
             */
            ns_steps?: number;
            /** Adjust Lr Fn */
            adjust_lr_fn?: ("original" | "match_rms_adamw") | null;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * NAdam
         * @description NAdam: Adam with Nesterov momentum and its warming schedule μ_t (see `nadam_momentum`);
         *     σ_t = sqrt(EMA_β2(g²)/(1 − β2^t)), θ ← θ − η_t · u_t/(σ_t + eps).
         *
         *     Reference: torch.optim.NAdam.
         */
        NAdam: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "nadam";
            /**
             * Lr
             * @default 0.002
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Momentum Decay
             * @default 0.004
             */
            momentum_decay?: number;
            /**
             * Decoupled Weight Decay
             * @default false
             */
            decoupled_weight_decay?: boolean;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * Noam
         * @description `factor · d_model^−0.5 · min((t+1)^−0.5, (t+1)·warmup_steps^−1.5)` (absolute).
         */
        Noam: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "noam";
            /**
             * D Model
             * @example 512
             */
            d_model: number;
            /**
             * Warmup Steps
             * @example 100
             */
            warmup_steps: number;
            /**
             * Factor
             * @default 1
             */
            factor?: number;
        };
        /**
         * NovoGrad
         * @description NovoGrad (optax.novograd): σ² one number per tensor, an average of ‖g‖²; momentum of
         *     g/σ + λ·θ (see `scale_by_novograd`).
         *
         *     Reference: optax.novograd.
         */
        NovoGrad: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "novograd";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * B1
             * @default 0.9
             */
            b1?: number;
            /**
             * B2
             * @default 0.25
             */
            b2?: number;
            /**
             * Eps
             * @default 0.000001
             */
            eps?: number;
            /**
             * Eps Root
             * @default 0
             */
            eps_root?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * OneCycle
         * @description torch OneCycleLR (absolute).
         */
        OneCycle: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "one_cycle";
            /**
             * Max Lr
             * @example 0.1
             */
            max_lr: number;
            /**
             * Total Steps
             * @example 1000
             */
            total_steps: number;
            /**
             * Pct Start
             * @default 0.3
             */
            pct_start?: number;
            /**
             * Div Factor
             * @default 25
             */
            div_factor?: number;
            /**
             * Final Div Factor
             * @default 10000
             */
            final_div_factor?: number;
            /**
             * Anneal
             * @default cos
             * @enum {string}
             */
            anneal?: "cos" | "linear";
        };
        /** ParamsResponse */
        ParamsResponse: {
            /** Step */
            step: number;
            /**
             * Tensors
             * @description One tensor (named `params`), or an object of named tensors. A session answers in the form it was created with.
             */
            params: components["schemas"]["Tensor"] | {
                [key: string]: components["schemas"]["Tensor"];
            };
        };
        /**
         * PiecewiseConstant
         * @description The value of the interval that holds t (absolute).
         */
        PiecewiseConstant: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "piecewise_constant";
            /**
             * Boundaries
             * @example [
             *       300,
             *       600
             *     ]
             */
            boundaries: number[];
            /**
             * Values
             * @example [
             *       0.1,
             *       0.01,
             *       0.001
             *     ]
             */
            values: number[];
        };
        /**
         * Polynomial
         * @description torch PolynomialLR.
         */
        Polynomial: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "polynomial";
            /**
             * Total Steps
             * @example 1000
             */
            total_steps: number;
            /**
             * Power
             * @default 1
             */
            power?: number;
        };
        /**
         * Prodigy
         * @description Adam at the step size d·lr, d estimated over all tensors (slots `exp_avg` — none when
         *     β1 = 0 —, `exp_avg_sq`, `s`, `p0`; globals `d`, `d_max`, `d_numerator`, `k`):
         *
         *         dlr = d·lr·(sqrt(1 − β2^(k+1))/(1 − β1^(k+1)) if use_bias_correction else 1)
         *         m ← β1·m + d(1 − β1)·g,   v ← β2·v + d²(1 − β2)·g²
         *         d_numerator ← β3·d_numerator + (d/d0)·dlr·Σ_tensors ⟨g, p0 − θ⟩      (β3 = sqrt(β2))
         *         s ← β3·s + (d/d0)·dlr·g   (safeguard_warmup: (d/d0)·d·g),   d_denom = Σ_tensors ‖s‖₁
         *         d̂ = d_coef·d_numerator/d_denom,   d_max ← max(d_max, d̂),   d ← min(d_max, d·growth_rate)
         *         θ ← θ − dlr·λ·θ (decouple) − dlr·m/(sqrt(v) + d·eps)
         *
         *     with d = max(d, d̂) first while d is still d0, and λ·θ added to g instead when not decoupled.
         *     `p0` is θ_0 and `s` accumulates every `slice_p`-th element only (the reference's memory
         *     saving). A group with lr 0 sits out the sums; other groups must share the session's lr. A
         *     step with d_denom = 0 (no gradient yet) moves nothing, as the reference returns early.
         *     `growth_rate` None is the reference's inf.
         *
         *     Reference: prodigyopt.Prodigy.
         */
        Prodigy: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "prodigy";
            /**
             * Lr
             * @default 1
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /** Beta3 */
            beta3?: number | null;
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Decouple
             * @default true
             */
            decouple?: boolean;
            /**
             * Use Bias Correction
             * @default false
             */
            use_bias_correction?: boolean;
            /**
             * Safeguard Warmup
             * @default false
             */
            safeguard_warmup?: boolean;
            /**
             * D0
             * @default 0.000001
             */
            d0?: number;
            /**
             * D Coef
             * @default 1
             */
            d_coef?: number;
            /** Growth Rate */
            growth_rate?: number | null;
            /**
             * Slice P
             * @default 1
             */
            slice_p?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * RAdam
         * @description RAdam: Adam whose σ is switched on once tractable and rectified (`scale_by_rectified_rms`);
         *     until then θ ← θ − η_t · m̂_t (σ_t = 1).
         *
         *     Reference: torch.optim.RAdam.
         */
        RAdam: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "radam";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Decoupled Weight Decay
             * @default false
             */
            decoupled_weight_decay?: boolean;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * RMSprop
         * @description RMSprop: σ_t² = α·σ_{t−1}² + (1 − α)·g_t² (minus the squared mean of g if centered);
         *     with momentum, torch's order: σ first, then m_t = μ·m_{t−1} + g_t/(σ_t + eps).
         *     `init: "first_grad"` is the lecture's σ_1² = g_1².
         *
         *     Reference: torch.optim.RMSprop.
         */
        RMSprop: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "rmsprop";
            /**
             * Lr
             * @default 0.01
             */
            lr?: number;
            /**
             * Alpha
             * @default 0.99
             */
            alpha?: number;
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Momentum
             * @default 0
             */
            momentum?: number;
            /**
             * Centered
             * @default false
             */
            centered?: boolean;
            /**
             * Init
             * @default zero
             * @enum {string}
             */
            init?: "zero" | "first_grad";
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * ReduceOnPlateau
         * @description torch ReduceLROnPlateau, fed by the `loss` of each step.
         */
        ReduceOnPlateau: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "reduce_on_plateau";
            /**
             * Mode
             * @default min
             * @enum {string}
             */
            mode?: "min" | "max";
            /**
             * Factor
             * @default 0.1
             */
            factor?: number;
            /**
             * Patience
             * @default 10
             */
            patience?: number;
            /**
             * Threshold
             * @default 0.0001
             */
            threshold?: number;
            /**
             * Threshold Mode
             * @default rel
             * @enum {string}
             */
            threshold_mode?: "rel" | "abs";
            /**
             * Cooldown
             * @default 0
             */
            cooldown?: number;
            /**
             * Min Lr
             * @default 0
             */
            min_lr?: number;
        };
        /**
         * Rprop
         * @description Rprop: σ_t·η_t replaced by a step size per element that grows by η+ while the gradient
         *     keeps its sign and shrinks by η− when it flips: θ ← θ − sign(g_t)·Δ_t, Δ_1 = lr
         *     (see `scale_by_rprop`).
         *
         *     Reference: torch.optim.Rprop.
         */
        Rprop: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "rprop";
            /**
             * Lr
             * @default 0.01
             */
            lr?: number;
            /**
             * Etas
             * @default [
             *       0.5,
             *       1.2
             *     ]
             */
            etas?: [
                number,
                number
            ];
            /**
             * Step Sizes
             * @default [
             *       0.000001,
             *       50
             *     ]
             */
            step_sizes?: [
                number,
                number
            ];
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * SGD
         * @description SGD: σ_t = 1, m_t torch's momentum buffer (momentum 0: the lecture's vanilla descent).
         *
         *     θ ← θ − η_t·m_t,  m_t = μ·m_{t−1} + (1 − dampening)·g_t  (m_1 = g_1);
         *     nesterov: θ ← θ − η_t·(g_t + μ·m_t).
         *
         *     Reference: torch.optim.SGD.
         */
        SGD: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "sgd";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * Momentum
             * @default 0
             */
            momentum?: number;
            /**
             * Dampening
             * @default 0
             */
            dampening?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Nesterov
             * @default false
             */
            nesterov?: boolean;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * ScheduleFreeAdamW
         * @description Schedule-free AdamW: `schedule_free_sgd`'s three sequences, its step direction g/σ with
         *     Adam's second moment (slot `exp_avg_sq`) and decoupled decay taken at y:
         *
         *         v_k = β2·v_{k−1} + (1 − β2)·g²,   σ = sqrt(v_k/(1 − β2^(k+1))) + eps,
         *         d = g/σ + λ·y,   and the momentum β = β1.
         *
         *     Reference: schedulefree.AdamWScheduleFree.
         */
        ScheduleFreeAdamW: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "schedule_free_adamw";
            /**
             * Lr
             * @default 0.0025
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Warmup Steps
             * @default 0
             */
            warmup_steps?: number;
            /**
             * R
             * @default 0
             */
            r?: number;
            /**
             * Weight Lr Power
             * @default 2
             */
            weight_lr_power?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * ScheduleFreeSGD
         * @description Schedule-free SGD: gradient steps on z (slot `z`, from θ_0), the weights to evaluate x
         *     their weighted average, and θ = y (the stored parameters, where the gradient is taken):
         *
         *         d = g + λ·y                                   (weight decay at y)
         *         z_{k+1} = z_k − γ_k·d
         *         x_{k+1} = (1 − c_{k+1})·x_k + c_{k+1}·z_{k+1}
         *         y_{k+1} = (1 − β)·z_{k+1} + β·x_{k+1}          (β = momentum)
         *
         *     computed on y alone, as the reference does:
         *         y ← lerp(y, z_k, c_{k+1}) + γ_k·(β(1 − c_{k+1}) − 1)·d.
         *     Its group's globals (`<group>.k`, `.lr_max`, `.weight_sum`) give γ and c:
         *
         *         γ_k = lr·min(1, (k+1)/warmup_steps)           (the scheduled lr, the step's `lr`)
         *         lr_max = max_{j≤k} γ_j,   w_k = (k+1)^r · lr_max^weight_lr_power
         *         weight_sum = Σ_{j≤k} w_j,   c_{k+1} = w_k / weight_sum   (0 while the sum is 0)
         *
         *     `eval` gives x = lerp(y, z, 1 − 1/β) (the reference's `eval()`).
         *
         *     Reference: schedulefree.SGDScheduleFree.
         */
        ScheduleFreeSGD: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "schedule_free_sgd";
            /**
             * Lr
             * @default 1
             */
            lr?: number;
            /**
             * Momentum
             * @default 0.9
             */
            momentum?: number;
            /**
             * Weight Decay
             * @default 0
             */
            weight_decay?: number;
            /**
             * Warmup Steps
             * @default 0
             */
            warmup_steps?: number;
            /**
             * R
             * @default 0
             */
            r?: number;
            /**
             * Weight Lr Power
             * @default 2
             */
            weight_lr_power?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /** SchedulePreview */
        SchedulePreview: {
            /**
             * Lr
             * @description η_0 … η_{N−1} (null where not finite).
             */
            lr: (number | null)[];
            /**
             * Estimated
             * @description The optimizer chooses its own step size (the learning-rate-free types): during a run it scales these rates by what it finds (Prodigy's and D-Adaptation's d, DoG's distance over gradients, schedule-free's warm-up); the steps' `lr` reports the result.
             * @default false
             */
            estimated?: boolean;
        };
        /**
         * Sequential
         * @description Schedule k runs on its own clock from milestone k−1 (torch SequentialLR's intent).
         */
        Sequential: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "sequential";
            /**
             * Schedules
             * @example [
             *       {
             *         "start_factor": 0.1,
             *         "total_steps": 100,
             *         "type": "linear"
             *       },
             *       {
             *         "total_steps": 900,
             *         "type": "cosine"
             *       }
             *     ]
             */
            schedules: (components["schemas"]["Constant"] | components["schemas"]["StepDecay"] | components["schemas"]["MultiStep"] | components["schemas"]["Exponential"] | components["schemas"]["InverseSqrt"] | components["schemas"]["Linear"] | components["schemas"]["Polynomial"] | components["schemas"]["Cosine"] | components["schemas"]["CosineRestarts"] | components["schemas"]["OneCycle"] | components["schemas"]["Noam"] | components["schemas"]["PiecewiseConstant"] | components["schemas"]["Warmup"] | components["schemas"]["Sequential"] | components["schemas"]["ReduceOnPlateau"])[];
            /**
             * Milestones
             * @example [
             *       100
             *     ]
             */
            milestones: number[];
        };
        /**
         * SessionConfig
         * @description How a session optimises: everything of the create body but the tensors, name and dtype.
         */
        SessionConfig: {
            /** Optimizer */
            optimizer: components["schemas"]["SGD"] | components["schemas"]["Adagrad"] | components["schemas"]["RMSprop"] | components["schemas"]["Adam"] | components["schemas"]["AdamW"] | components["schemas"]["Adamax"] | components["schemas"]["NAdam"] | components["schemas"]["RAdam"] | components["schemas"]["Adadelta"] | components["schemas"]["Adafactor"] | components["schemas"]["Muon"] | components["schemas"]["Rprop"] | components["schemas"]["ASGD"] | components["schemas"]["SparseAdam"] | components["schemas"]["Lion"] | components["schemas"]["Yogi"] | components["schemas"]["LAMB"] | components["schemas"]["LARS"] | components["schemas"]["AdaBelief"] | components["schemas"]["NovoGrad"] | components["schemas"]["Adan"] | components["schemas"]["ScheduleFreeAdamW"] | components["schemas"]["ScheduleFreeSGD"] | components["schemas"]["Prodigy"] | components["schemas"]["DAdaptAdam"] | components["schemas"]["DAdaptSGD"] | components["schemas"]["DAdaptAdaGrad"] | components["schemas"]["DoG"] | components["schemas"]["LDoG"] | components["schemas"]["Custom"];
            /** Schedule */
            schedule?: components["schemas"]["Constant"] | components["schemas"]["StepDecay"] | components["schemas"]["MultiStep"] | components["schemas"]["Exponential"] | components["schemas"]["InverseSqrt"] | components["schemas"]["Linear"] | components["schemas"]["Polynomial"] | components["schemas"]["Cosine"] | components["schemas"]["CosineRestarts"] | components["schemas"]["OneCycle"] | components["schemas"]["Noam"] | components["schemas"]["PiecewiseConstant"] | components["schemas"]["Warmup"] | components["schemas"]["Sequential"] | components["schemas"]["ReduceOnPlateau"];
            /**
             * Clip Grad Norm
             * @description Scale g by min(1, max_norm / (‖g‖₂ + 1e-6)), torch's rule.
             */
            clip_grad_norm?: number | null;
            /**
             * Clip Grad Value
             * @description Clamp g to ±value.
             */
            clip_grad_value?: number | null;
            /**
             * Nonfinite
             * @description A gradient with NaN/±Inf: `reject` (422) or `skip` (200, nothing changes).
             * @default reject
             * @enum {string}
             */
            nonfinite?: "reject" | "skip";
            /**
             * Groups
             * @description Per-tensor overrides; the first group that matches wins.
             */
            groups?: components["schemas"]["Group"][] | null;
            /**
             * Accumulate
             * @description K: gradients averaged per step. With K > 1 the first K−1 posts of a step answer 202 (how many are still missing) and the K-th applies their mean.
             * @default 1
             */
            accumulate?: number;
        };
        /**
         * SessionView
         * @description A session as `GET /v1/sessions/{id}` shows it: its config with every default filled in.
         */
        SessionView: {
            /**
             * Id
             * Format: uuid
             */
            id: string;
            /** Name */
            name: string | null;
            /**
             * Dtype
             * @enum {string}
             */
            dtype: "float32" | "float64";
            /**
             * Layout
             * @description `single`: params is one array; `named`: an object of named arrays.
             * @enum {string}
             */
            layout: "single" | "named";
            /**
             * Shapes
             * @description Tensor name → shape, in order.
             */
            shapes: {
                [key: string]: number[];
            };
            /** Optimizer */
            optimizer: components["schemas"]["SGD"] | components["schemas"]["Adagrad"] | components["schemas"]["RMSprop"] | components["schemas"]["Adam"] | components["schemas"]["AdamW"] | components["schemas"]["Adamax"] | components["schemas"]["NAdam"] | components["schemas"]["RAdam"] | components["schemas"]["Adadelta"] | components["schemas"]["Adafactor"] | components["schemas"]["Muon"] | components["schemas"]["Rprop"] | components["schemas"]["ASGD"] | components["schemas"]["SparseAdam"] | components["schemas"]["Lion"] | components["schemas"]["Yogi"] | components["schemas"]["LAMB"] | components["schemas"]["LARS"] | components["schemas"]["AdaBelief"] | components["schemas"]["NovoGrad"] | components["schemas"]["Adan"] | components["schemas"]["ScheduleFreeAdamW"] | components["schemas"]["ScheduleFreeSGD"] | components["schemas"]["Prodigy"] | components["schemas"]["DAdaptAdam"] | components["schemas"]["DAdaptSGD"] | components["schemas"]["DAdaptAdaGrad"] | components["schemas"]["DoG"] | components["schemas"]["LDoG"] | components["schemas"]["Custom"];
            /** Schedule */
            schedule?: components["schemas"]["Constant"] | components["schemas"]["StepDecay"] | components["schemas"]["MultiStep"] | components["schemas"]["Exponential"] | components["schemas"]["InverseSqrt"] | components["schemas"]["Linear"] | components["schemas"]["Polynomial"] | components["schemas"]["Cosine"] | components["schemas"]["CosineRestarts"] | components["schemas"]["OneCycle"] | components["schemas"]["Noam"] | components["schemas"]["PiecewiseConstant"] | components["schemas"]["Warmup"] | components["schemas"]["Sequential"] | components["schemas"]["ReduceOnPlateau"];
            /**
             * Clip Grad Norm
             * @description Scale g by min(1, max_norm / (‖g‖₂ + 1e-6)), torch's rule.
             */
            clip_grad_norm?: number | null;
            /**
             * Clip Grad Value
             * @description Clamp g to ±value.
             */
            clip_grad_value?: number | null;
            /**
             * Nonfinite
             * @description A gradient with NaN/±Inf: `reject` (422) or `skip` (200, nothing changes).
             * @default reject
             * @enum {string}
             */
            nonfinite?: "reject" | "skip";
            /**
             * Groups
             * @description Per-tensor overrides; the first group that matches wins.
             */
            groups?: components["schemas"]["Group"][] | null;
            /**
             * Accumulate
             * @description K: gradients averaged per step. With K > 1 the first K−1 posts of a step answer 202 (how many are still missing) and the K-th applies their mean.
             * @default 1
             */
            accumulate?: number;
            /**
             * Step
             * @description t: updates applied so far.
             */
            step: number;
            /**
             * Accumulated
             * @description Gradients received toward the next step (`accumulate` > 1); 0 otherwise.
             * @default 0
             */
            accumulated?: number;
            /**
             * Lr
             * @description η_t: the learning rate the next step will use (null if not finite).
             */
            lr: number | null;
            /** Last Loss */
            last_loss: number | null;
            /**
             * Created At
             * Format: date-time
             */
            created_at: string;
            /**
             * Updated At
             * Format: date-time
             */
            updated_at: string;
        };
        /**
         * SparseAdam
         * @description SparseAdam: Adam over the rows a sparse gradient touches (the moments of the others stay
         *     as they are): m ← m + (g − m)(1 − β1), v ← v + (g² − v)(1 − β2),
         *
         *     θ ← θ − η_t·sqrt(1 − β2^t)/(1 − β1^t) · m/(sqrt(v) + eps)     (t: the tensor's steps).
         *     A dense gradient is every row touched.
         *
         *     Reference: torch.optim.SparseAdam.
         */
        SparseAdam: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "sparse_adam";
            /**
             * Lr
             * @default 0.001
             */
            lr?: number;
            /**
             * Betas
             * @default [
             *       0.9,
             *       0.999
             *     ]
             */
            betas?: [
                number,
                number
            ];
            /**
             * Eps
             * @default 1e-8
             */
            eps?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /**
         * StateExport
         * @description A session's whole run: config, t, θ and every state slot (`GET …/state`, import).
         */
        StateExport: {
            /**
             * Format
             * @description The format and its version.
             * @constant
             */
            format: "optaas-state/1";
            /**
             * Id
             * @description The exported session's id (import ignores it).
             */
            id?: string | null;
            /** Name */
            name?: string | null;
            /**
             * Dtype
             * @enum {string}
             */
            dtype: "float32" | "float64";
            /**
             * Layout
             * @enum {string}
             */
            layout: "single" | "named";
            /**
             * Tensors
             * @description Tensor names, in order.
             */
            tensors: string[];
            config: components["schemas"]["SessionConfig"];
            /**
             * Step
             * @description t: updates applied so far.
             */
            step: number;
            /**
             * Schedule State
             * @description `reduce_on_plateau`'s state ({} otherwise).
             */
            schedule_state?: {
                [key: string]: number;
            };
            /** Last Loss */
            last_loss?: number | null;
            /**
             * Rates
             * @description η_t of each parameter group, which the next step will use: the base optimizer's, then `config.groups`' in order (null where not finite). Written for conversions to frameworks without optaas's schedules (the Python client's torch converters); an import ignores it.
             */
            rates?: (number | null)[] | null;
            /**
             * Tensors
             * @description θ_t, in the session's form.
             */
            params: components["schemas"]["Tensor"] | {
                [key: string]: components["schemas"]["Tensor"];
            };
            /**
             * State
             * @description Tensor name → slot name → value.
             */
            state: {
                [key: string]: {
                    [key: string]: components["schemas"]["Tensor"];
                };
            };
            /**
             * Globals
             * @description The learning-rate-free types' global quantities (Prodigy's `d`, schedule-free's `optimizer.weight_sum`, DoG's `optimizer.rbar`, …): name → number or array; {} for the other types.
             */
            globals?: {
                [key: string]: components["schemas"]["Tensor"];
            };
        };
        /**
         * StepDecay
         * @description `gamma^floor(t / step_size)`.
         */
        StepDecay: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "step";
            /**
             * Step Size
             * @example 100
             */
            step_size: number;
            /**
             * Gamma
             * @default 0.1
             */
            gamma?: number;
        };
        /**
         * StepRecord
         * @description One step taken: applied, or skipped under `nonfinite: skip` (then `step` is unchanged).
         */
        StepRecord: {
            /**
             * Seq
             * @description The record's number in this session's history (the cursor).
             */
            seq: number;
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            kind: "step";
            /**
             * Step
             * @description t after this step.
             */
            step: number;
            /**
             * Lr
             * @description η_t this step used (null if not finite).
             */
            lr: number | null;
            /**
             * Loss
             * @description The loss posted with the step, if any.
             */
            loss: number | null;
            /**
             * Grad Norm
             * @description ‖g‖₂ before clipping; null if not finite.
             */
            grad_norm: number | null;
            /**
             * Update Norm
             * @description ‖θ_{t+1} − θ_t‖₂; null if not finite.
             */
            update_norm: number | null;
            /** Skipped */
            skipped: boolean;
            /**
             * At
             * Format: date-time
             * @description When the step was stored (UTC).
             */
            at: string;
            /**
             * Duration Ms
             * @description Server time from reading the session (lock wait included) to storing it.
             */
            duration_ms: number;
        };
        /**
         * StepResponse
         * @description JSON has no Inf or NaN: a number that is not finite is written as null.
         */
        StepResponse: {
            /**
             * Step
             * @description t after this step.
             */
            step: number;
            /**
             * Lr
             * @description η of this step.
             */
            lr: number | null;
            /**
             * Params
             * @description θ after this step; a tensor stepped by sparse rows shows only the rows it changed (`?return=full`: whole).
             */
            params?: (components["schemas"]["Tensor"] | components["schemas"]["SparseRows"] | {
                [key: string]: components["schemas"]["Tensor"] | components["schemas"]["SparseRows"];
            }) | null;
            /**
             * Grad Norm
             * @description ‖g‖₂ over all tensors, before clipping; null if g was not finite.
             */
            grad_norm: number | null;
            /**
             * Update Norm
             * @description ‖θ_{t+1} − θ_t‖₂.
             */
            update_norm: number | null;
            /**
             * Skipped
             * @description A non-finite gradient under `nonfinite: skip`.
             */
            skipped: boolean;
        };
        /**
         * Warmup
         * @description `(t+1)/warmup_steps` for t < warmup_steps, then `then(t − warmup_steps)`.
         */
        Warmup: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "warmup";
            /**
             * Warmup Steps
             * @example 100
             */
            warmup_steps: number;
            /** Then */
            then?: components["schemas"]["Constant"] | components["schemas"]["StepDecay"] | components["schemas"]["MultiStep"] | components["schemas"]["Exponential"] | components["schemas"]["InverseSqrt"] | components["schemas"]["Linear"] | components["schemas"]["Polynomial"] | components["schemas"]["Cosine"] | components["schemas"]["CosineRestarts"] | components["schemas"]["OneCycle"] | components["schemas"]["Noam"] | components["schemas"]["PiecewiseConstant"] | components["schemas"]["Warmup"] | components["schemas"]["Sequential"] | components["schemas"]["ReduceOnPlateau"];
        };
        /**
         * Yogi
         * @description Yogi (optax.yogi): Adam whose σ² moves by −(1 − β2)·sign(v − g²)·g², from moments
         *     started at 1e-6 and bias-corrected (see `scale_by_yogi`). Not Flower's FedYogi, whose
         *     moments start at 0 uncorrected: no optaas type is that rule (docs/federated.md).
         *
         *     Reference: optax.yogi.
         */
        Yogi: {
            /**
             * @description discriminator enum property added by openapi-typescript
             * @enum {string}
             */
            type: "yogi";
            /**
             * Lr
             * @default 0.01
             */
            lr?: number;
            /**
             * B1
             * @default 0.9
             */
            b1?: number;
            /**
             * B2
             * @default 0.999
             */
            b2?: number;
            /**
             * Eps
             * @default 0.001
             */
            eps?: number;
            /**
             * Maximize
             * @default false
             */
            maximize?: boolean;
        };
        /** CreateSession */
        CreateSession: {
            /** Optimizer */
            optimizer: components["schemas"]["SGD"] | components["schemas"]["Adagrad"] | components["schemas"]["RMSprop"] | components["schemas"]["Adam"] | components["schemas"]["AdamW"] | components["schemas"]["Adamax"] | components["schemas"]["NAdam"] | components["schemas"]["RAdam"] | components["schemas"]["Adadelta"] | components["schemas"]["Adafactor"] | components["schemas"]["Muon"] | components["schemas"]["Rprop"] | components["schemas"]["ASGD"] | components["schemas"]["SparseAdam"] | components["schemas"]["Lion"] | components["schemas"]["Yogi"] | components["schemas"]["LAMB"] | components["schemas"]["LARS"] | components["schemas"]["AdaBelief"] | components["schemas"]["NovoGrad"] | components["schemas"]["Adan"] | components["schemas"]["ScheduleFreeAdamW"] | components["schemas"]["ScheduleFreeSGD"] | components["schemas"]["Prodigy"] | components["schemas"]["DAdaptAdam"] | components["schemas"]["DAdaptSGD"] | components["schemas"]["DAdaptAdaGrad"] | components["schemas"]["DoG"] | components["schemas"]["LDoG"] | components["schemas"]["Custom"];
            /** Schedule */
            schedule?: components["schemas"]["Constant"] | components["schemas"]["StepDecay"] | components["schemas"]["MultiStep"] | components["schemas"]["Exponential"] | components["schemas"]["InverseSqrt"] | components["schemas"]["Linear"] | components["schemas"]["Polynomial"] | components["schemas"]["Cosine"] | components["schemas"]["CosineRestarts"] | components["schemas"]["OneCycle"] | components["schemas"]["Noam"] | components["schemas"]["PiecewiseConstant"] | components["schemas"]["Warmup"] | components["schemas"]["Sequential"] | components["schemas"]["ReduceOnPlateau"];
            /**
             * Clip Grad Norm
             * @description Scale g by min(1, max_norm / (‖g‖₂ + 1e-6)), torch's rule.
             * @default null
             */
            clip_grad_norm?: number | null;
            /**
             * Clip Grad Value
             * @description Clamp g to ±value.
             * @default null
             */
            clip_grad_value?: number | null;
            /**
             * Nonfinite
             * @description A gradient with NaN/±Inf: `reject` (422) or `skip` (200, nothing changes).
             * @default reject
             * @enum {string}
             */
            nonfinite?: "reject" | "skip";
            /**
             * Groups
             * @description Per-tensor overrides; the first group that matches wins.
             * @default null
             */
            groups?: components["schemas"]["Group"][] | null;
            /**
             * Accumulate
             * @description K: gradients averaged per step. With K > 1 the first K−1 posts of a step answer 202 (how many are still missing) and the K-th applies their mean.
             * @default 1
             */
            accumulate?: number;
            /**
             * Name
             * @default null
             */
            name?: string | null;
            /**
             * Tensors
             * @description The initial parameters θ₀.
             */
            params: components["schemas"]["Tensor"] | {
                [key: string]: components["schemas"]["Tensor"];
            };
            /**
             * Dtype
             * @default float32
             * @enum {string}
             */
            dtype?: "float32" | "float64";
        };
        /**
         * Problem
         * @description An RFC 9457 problem document; extension members (e.g. `tensor`) may follow.
         */
        Problem: {
            /** Type */
            type: string;
            /** Title */
            title: string;
            /** Status */
            status: number;
            /** Detail */
            detail: string;
        } & {
            [key: string]: unknown;
        };
        /** SchedulePreviewRequest */
        SchedulePreviewRequest: {
            /**
             * Schedule
             * @description Any schedule a session accepts.
             */
            schedule: components["schemas"]["Constant"] | components["schemas"]["StepDecay"] | components["schemas"]["MultiStep"] | components["schemas"]["Exponential"] | components["schemas"]["InverseSqrt"] | components["schemas"]["Linear"] | components["schemas"]["Polynomial"] | components["schemas"]["Cosine"] | components["schemas"]["CosineRestarts"] | components["schemas"]["OneCycle"] | components["schemas"]["Noam"] | components["schemas"]["PiecewiseConstant"] | components["schemas"]["Warmup"] | components["schemas"]["Sequential"] | components["schemas"]["ReduceOnPlateau"];
            /**
             * Lr
             * @description The base learning rate; left out: the `optimizer`'s lr (its type's default if it gives none), or 1 without one (the schedule's factor itself).
             * @default null
             */
            lr?: number | null;
            /**
             * Optimizer
             * @description The optimizer the schedule is for (any type a session takes): its lr is the base rate when `lr` is left out.
             * @default null
             */
            optimizer?: (components["schemas"]["SGD"] | components["schemas"]["Adagrad"] | components["schemas"]["RMSprop"] | components["schemas"]["Adam"] | components["schemas"]["AdamW"] | components["schemas"]["Adamax"] | components["schemas"]["NAdam"] | components["schemas"]["RAdam"] | components["schemas"]["Adadelta"] | components["schemas"]["Adafactor"] | components["schemas"]["Muon"] | components["schemas"]["Rprop"] | components["schemas"]["ASGD"] | components["schemas"]["SparseAdam"] | components["schemas"]["Lion"] | components["schemas"]["Yogi"] | components["schemas"]["LAMB"] | components["schemas"]["LARS"] | components["schemas"]["AdaBelief"] | components["schemas"]["NovoGrad"] | components["schemas"]["Adan"] | components["schemas"]["ScheduleFreeAdamW"] | components["schemas"]["ScheduleFreeSGD"] | components["schemas"]["Prodigy"] | components["schemas"]["DAdaptAdam"] | components["schemas"]["DAdaptSGD"] | components["schemas"]["DAdaptAdaGrad"] | components["schemas"]["DoG"] | components["schemas"]["LDoG"] | components["schemas"]["Custom"]) | null;
            /**
             * Steps
             * @description How many rates: η_0 … η_{N−1}; steps × the schedule's nesting depth may be at most 400000 (a warm-up into a cosine is 2 deep).
             */
            steps: number;
        };
        /**
         * SessionPatch
         * @description A JSON merge patch (RFC 7396) of the session's configuration: the fields to change.
         *
         *     Objects are merged field by field (`{"optimizer": {"lr": 0.005}}` changes lr alone), other
         *     values replace the old ones (`betas`, `groups`), and `null` restores a field's default. An
         *     object whose `type` differs from the current one replaces it whole (a new schedule). θ, the
         *     state, t, `dtype` and the tensors cannot be patched.
         */
        SessionPatch: {
            /**
             * Name
             * @default null
             */
            name?: string | null;
            /**
             * Optimizer
             * @description Hyper-parameters to change, e.g. `{"lr": 0.005}`. Its `type` cannot change by PATCH (fork the session instead); a fork may change it.
             * @default null
             */
            optimizer?: {
                [key: string]: unknown;
            } | null;
            /**
             * Schedule
             * @description Schedule fields to change, or a whole new schedule (with another `type`).
             * @default null
             */
            schedule?: {
                [key: string]: unknown;
            } | null;
            /**
             * Clip Grad Norm
             * @default null
             */
            clip_grad_norm?: number | null;
            /**
             * Clip Grad Value
             * @default null
             */
            clip_grad_value?: number | null;
            /**
             * Nonfinite
             * @default null
             */
            nonfinite?: ("reject" | "skip") | null;
            /**
             * Groups
             * @default null
             */
            groups?: components["schemas"]["Group"][] | null;
            /**
             * Accumulate
             * @default null
             */
            accumulate?: number | null;
        };
        /**
         * StepAccepted
         * @description A gradient counted toward the next step (`accumulate` > 1), which awaits more of them.
         */
        StepAccepted: {
            /**
             * Step
             * @description t: the session's step, unchanged until the K-th gradient.
             */
            step: number;
            /**
             * Received
             * @description Gradients received toward step t + 1, this one included.
             */
            received: number;
            /**
             * Missing
             * @description How many more the step waits for (K − received).
             */
            missing: number;
            /**
             * Wait For Step
             * @description t + 1: pass it to `GET …/params?wait_for_step=` to wait for the step.
             */
            wait_for_step: number;
        };
        /** StepRequest */
        StepRequest: {
            /**
             * Gradients
             * @description ∂loss/∂θ, in the form of the session's params; a tensor's may be sparse rows (`{"rows": [...], "values": [...]}`).
             */
            gradients: components["schemas"]["Tensor"] | components["schemas"]["SparseRows"] | {
                [key: string]: components["schemas"]["Tensor"] | components["schemas"]["SparseRows"];
            };
            /**
             * Loss
             * @description Recorded with the step.
             * @default null
             */
            loss?: number | null;
            /**
             * Partial
             * @description Gradients for a subset of the tensors; the others (and their state) stay.
             * @default false
             */
            partial?: boolean;
        };
        /**
         * Tensor
         * @description A number, or a nested array of numbers whose nesting gives the shape.
         */
        Tensor: NestedNumbers;
        /**
         * SparseRows
         * @description Some rows of a tensor's first axis (2+ dimensions): `values[k]` belongs to row `rows[k]`, `values` has shape `[len(rows), *shape[1:]]`. As a gradient (types that take sparse rows: `sparse_adam`, `adagrad`, `sgd` without momentum) the rows a batch touched, repeated rows summed; in an answer, the rows the step changed.
         */
        SparseRows: {
            rows: number[];
            values: components["schemas"]["Tensor"];
        };
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    "sessions-create_session": {
        parameters: {
            query?: never;
            header?: {
                /** @description Any string of 1 to 255 characters (a UUID is best). The first request with this key is applied and its answer kept; a repeat gets the kept answer (`Idempotent-Replayed: true`) and applies nothing; the key with a different request is a 422. */
                "Idempotency-Key"?: string;
            };
            path?: never;
            cookie?: never;
        };
        /** @description JSON (`application/json`) or, for large models, a safetensors file (`application/vnd.safetensors`): θ₀ by tensor name (a file whose only tensor is `params` makes the single form), in any number type (cast to the session's dtype); `__metadata__` holds everything else of the JSON body as JSON text under the key `optaas` (`"optaas": "{\"optimizer\": {\"type\": \"adam\"}}"`; absent: every default). */
        requestBody: {
            content: {
                "application/json": components["schemas"]["CreateSession"];
                "application/vnd.safetensors": Uint8Array;
            };
        };
        responses: {
            /** @description The new session; its `token` is shown only here. */
            201: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description The new session's URL. */
                    Location: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "id": "262f9dfc-5a37-4d26-9a35-c1b7a0c3f1de",
                     *       "name": "mnist-mlp",
                     *       "dtype": "float32",
                     *       "layout": "named",
                     *       "shapes": {
                     *         "w": [
                     *           2,
                     *           2
                     *         ],
                     *         "b": [
                     *           2
                     *         ]
                     *       },
                     *       "optimizer": {
                     *         "type": "adam",
                     *         "lr": 0.01,
                     *         "betas": [
                     *           0.9,
                     *           0.999
                     *         ],
                     *         "eps": 1e-8,
                     *         "weight_decay": 0,
                     *         "amsgrad": false,
                     *         "decoupled_weight_decay": false,
                     *         "maximize": false
                     *       },
                     *       "schedule": {
                     *         "type": "warmup",
                     *         "warmup_steps": 100,
                     *         "then": {
                     *           "type": "cosine",
                     *           "total_steps": 10000,
                     *           "min_lr": 0
                     *         }
                     *       },
                     *       "clip_grad_norm": 1,
                     *       "clip_grad_value": null,
                     *       "nonfinite": "reject",
                     *       "groups": null,
                     *       "accumulate": 1,
                     *       "step": 0,
                     *       "accumulated": 0,
                     *       "lr": 0.0001,
                     *       "last_loss": null,
                     *       "created_at": "2026-11-25T09:30:00.123456Z",
                     *       "updated_at": "2026-11-25T09:30:00.123456Z",
                     *       "token": "UFWfQ0dJ3m0c…(43 characters)"
                     *     }
                     */
                    "application/json": components["schemas"]["CreatedSession"];
                };
            };
            /** @description The body is not valid JSON (or not a valid safetensors file). Or: The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-body",
                     *       "title": "Malformed request body",
                     *       "status": 400,
                     *       "detail": "the body is not valid JSON: unexpected character: line 1 column 2"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/api-key-required",
                     *       "title": "A valid API key is required",
                     *       "status": 401,
                     *       "detail": "creating a session on this server needs a valid X-API-Key header"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The session did not reach `wait_for_step` within `timeout`; the problem says where it is (`current_step`, and while accumulating `received` and `missing`). Or the body stopped arriving for the server's body timeout (`body-timeout`). */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/body-timeout",
                     *       "title": "Request body timed out",
                     *       "status": 408,
                     *       "detail": "no byte of the request body came for 30 s (OPTAAS_BODY_TIMEOUT_SECONDS) after 65536 bytes; send the request again",
                     *       "received_bytes": 65536
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is over its limit: the server's, JSON's (send safetensors), or what this session's step needs; the problem says which. */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/payload-too-large",
                     *       "title": "Request body too large",
                     *       "status": 413,
                     *       "detail": "the request body declares 40000512 bytes; JSON bodies may have up to 33554432 bytes (OPTAAS_MAX_JSON_BODY_BYTES): JSON is for small models, send large ones as safetensors (application/vnd.safetensors)",
                     *       "max_body_bytes": 33554432
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is not of a media type this operation takes. */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/unsupported-media-type",
                     *       "title": "Unsupported media type",
                     *       "status": 415,
                     *       "detail": "this endpoint takes application/json, not text/plain",
                     *       "supported": [
                     *         "application/json"
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/invalid-hyper-parameter",
                     *       "title": "Invalid hyper-parameter",
                     *       "status": 422,
                     *       "detail": "schedule.then.total_steps: must be >= 1, got 0",
                     *       "field": "schedule.then.total_steps"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description Too many requests of this kind from this API key (or address, on a server without keys): send it again after `Retry-After` seconds. */
            429: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/rate-limited",
                     *       "title": "Too many requests",
                     *       "status": 429,
                     *       "detail": "more creation requests from this API key than its limit of 10 per 1 second; send it again after 1 s",
                     *       "retry_after": 1,
                     *       "limit": "10 per 1 second"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "sessions-get_session": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The session's id (a UUID), from its creation. */
                session_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "id": "262f9dfc-5a37-4d26-9a35-c1b7a0c3f1de",
                     *       "name": "mnist-mlp",
                     *       "dtype": "float32",
                     *       "layout": "named",
                     *       "shapes": {
                     *         "w": [
                     *           2,
                     *           2
                     *         ],
                     *         "b": [
                     *           2
                     *         ]
                     *       },
                     *       "optimizer": {
                     *         "type": "adam",
                     *         "lr": 0.01,
                     *         "betas": [
                     *           0.9,
                     *           0.999
                     *         ],
                     *         "eps": 1e-8,
                     *         "weight_decay": 0,
                     *         "amsgrad": false,
                     *         "decoupled_weight_decay": false,
                     *         "maximize": false
                     *       },
                     *       "schedule": {
                     *         "type": "warmup",
                     *         "warmup_steps": 100,
                     *         "then": {
                     *           "type": "cosine",
                     *           "total_steps": 10000,
                     *           "min_lr": 0
                     *         }
                     *       },
                     *       "clip_grad_norm": 1,
                     *       "clip_grad_value": null,
                     *       "nonfinite": "reject",
                     *       "groups": null,
                     *       "accumulate": 1,
                     *       "step": 1,
                     *       "accumulated": 0,
                     *       "lr": 0.0001,
                     *       "last_loss": 0.42,
                     *       "created_at": "2026-11-25T09:30:00.123456Z",
                     *       "updated_at": "2026-11-25T09:30:00.123456Z"
                     *     }
                     */
                    "application/json": components["schemas"]["SessionView"];
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No such session, or not with this token. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/session-not-found",
                     *       "title": "Session not found",
                     *       "status": 404,
                     *       "detail": "No session with this id is visible with the token given."
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/validation-error",
                     *       "title": "Request validation failed",
                     *       "status": 422,
                     *       "detail": "query.limit: Input should be less than or equal to 1000",
                     *       "errors": [
                     *         {
                     *           "loc": [
                     *             "query",
                     *             "limit"
                     *           ],
                     *           "msg": "Input should be less than or equal to 1000",
                     *           "type": "less_than_equal"
                     *         }
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "sessions-delete_session": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The session's id (a UUID), from its creation. */
                session_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No such session, or not with this token. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/session-not-found",
                     *       "title": "Session not found",
                     *       "status": 404,
                     *       "detail": "No session with this id is visible with the token given."
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/validation-error",
                     *       "title": "Request validation failed",
                     *       "status": 422,
                     *       "detail": "query.limit: Input should be less than or equal to 1000",
                     *       "errors": [
                     *         {
                     *           "loc": [
                     *             "query",
                     *             "limit"
                     *           ],
                     *           "msg": "Input should be less than or equal to 1000",
                     *           "type": "less_than_equal"
                     *         }
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "sessions-patch_session": {
        parameters: {
            query?: never;
            header?: {
                /** @description Apply only if the session is at this step: its `ETag`, e.g. `"12"`, a list of them, or `*`. Otherwise 412 with `current_step`. */
                "If-Match"?: string;
            };
            path: {
                /** @description The session's id (a UUID), from its creation. */
                session_id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["SessionPatch"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "id": "262f9dfc-5a37-4d26-9a35-c1b7a0c3f1de",
                     *       "name": "mnist-mlp",
                     *       "dtype": "float32",
                     *       "layout": "named",
                     *       "shapes": {
                     *         "w": [
                     *           2,
                     *           2
                     *         ],
                     *         "b": [
                     *           2
                     *         ]
                     *       },
                     *       "optimizer": {
                     *         "type": "adam",
                     *         "lr": 0.005,
                     *         "betas": [
                     *           0.9,
                     *           0.999
                     *         ],
                     *         "eps": 1e-8,
                     *         "weight_decay": 0,
                     *         "amsgrad": false,
                     *         "decoupled_weight_decay": false,
                     *         "maximize": false
                     *       },
                     *       "schedule": {
                     *         "type": "warmup",
                     *         "warmup_steps": 100,
                     *         "then": {
                     *           "type": "cosine",
                     *           "total_steps": 10000,
                     *           "min_lr": 0
                     *         }
                     *       },
                     *       "clip_grad_norm": 1,
                     *       "clip_grad_value": null,
                     *       "nonfinite": "reject",
                     *       "groups": null,
                     *       "accumulate": 1,
                     *       "step": 1,
                     *       "accumulated": 0,
                     *       "lr": 0.00005,
                     *       "last_loss": null,
                     *       "created_at": "2026-11-25T09:30:00.123456Z",
                     *       "updated_at": "2026-11-25T09:30:00.123456Z"
                     *     }
                     */
                    "application/json": components["schemas"]["SessionView"];
                };
            };
            /** @description The body is not valid JSON (or not a valid safetensors file). Or: The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-body",
                     *       "title": "Malformed request body",
                     *       "status": 400,
                     *       "detail": "the body is not valid JSON: unexpected character: line 1 column 2"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No such session, or not with this token. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/session-not-found",
                     *       "title": "Session not found",
                     *       "status": 404,
                     *       "detail": "No session with this id is visible with the token given."
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The session did not reach `wait_for_step` within `timeout`; the problem says where it is (`current_step`, and while accumulating `received` and `missing`). Or the body stopped arriving for the server's body timeout (`body-timeout`). */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/body-timeout",
                     *       "title": "Request body timed out",
                     *       "status": 408,
                     *       "detail": "no byte of the request body came for 30 s (OPTAAS_BODY_TIMEOUT_SECONDS) after 65536 bytes; send the request again",
                     *       "received_bytes": 65536
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description `If-Match` lists no tag the session has: nothing applied (`current_step` says where). */
            412: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/precondition-failed",
                     *       "title": "Precondition failed",
                     *       "status": 412,
                     *       "detail": "the session is at step 8, not 7",
                     *       "current_step": 8
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is over its limit: the server's, JSON's (send safetensors), or what this session's step needs; the problem says which. */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/payload-too-large",
                     *       "title": "Request body too large",
                     *       "status": 413,
                     *       "detail": "the request body declares 40000512 bytes; JSON bodies may have up to 33554432 bytes (OPTAAS_MAX_JSON_BODY_BYTES): JSON is for small models, send large ones as safetensors (application/vnd.safetensors)",
                     *       "max_body_bytes": 33554432
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is not of a media type this operation takes. */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/unsupported-media-type",
                     *       "title": "Unsupported media type",
                     *       "status": 415,
                     *       "detail": "this endpoint takes application/json, not text/plain",
                     *       "supported": [
                     *         "application/json"
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/optimizer-type-change",
                     *       "title": "The optimizer type cannot change mid-run",
                     *       "status": 422,
                     *       "detail": "the optimizer type cannot change mid-run ('adam' → 'sgd'): its state does not carry over. Fork the session with the new optimizer instead: POST /v1/sessions/{id}/fork with {\"optimizer\": {\"type\": \"sgd\", …}}",
                     *       "field": "optimizer.type"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "sessions-step_session": {
        parameters: {
            query?: {
                /** @description `params`: θ, where a tensor stepped by sparse rows shows only the rows it changed; `full`: every tensor whole; `none` leaves `params` out. */
                return?: "params" | "full" | "none";
            };
            header?: {
                /** @description Any string of 1 to 255 characters (a UUID is best). The first request with this key is applied and its answer kept; a repeat gets the kept answer (`Idempotent-Replayed: true`) and applies nothing; the key with a different request is a 422. */
                "Idempotency-Key"?: string;
                /** @description Apply only if the session is at this step: its `ETag`, e.g. `"12"`, a list of them, or `*`. Otherwise 412 with `current_step`. */
                "If-Match"?: string;
            };
            path: {
                /** @description The session's id (a UUID), from its creation. */
                session_id: string;
            };
            cookie?: never;
        };
        /** @description JSON (`application/json`) or, for large models, a safetensors file (`application/vnd.safetensors`): the gradients by tensor name (the single form's tensor is `params`), in any number type (F32, F64, F16, BF16 or an integer type; cast to the session's dtype); `__metadata__` may give `loss` and `partial` as JSON text (`"loss": "0.42"`, `"partial": "true"`); other metadata keys are ignored. */
        requestBody: {
            content: {
                "application/json": components["schemas"]["StepRequest"];
                "application/vnd.safetensors": Uint8Array;
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "step": 1,
                     *       "lr": 0.0001,
                     *       "params": {
                     *         "w": [
                     *           [
                     *             0.0999,
                     *             -0.1999
                     *           ],
                     *           [
                     *             0.2999,
                     *             0.0001
                     *           ]
                     *         ],
                     *         "b": [
                     *           -0.0001,
                     *           0.0001
                     *         ]
                     *       },
                     *       "grad_norm": 2.3092206480576105,
                     *       "update_norm": 0.00014142135,
                     *       "skipped": false
                     *     }
                     */
                    "application/json": components["schemas"]["StepResponse"];
                    "application/vnd.safetensors": Uint8Array;
                };
            };
            /** @description With `accumulate` K > 1: the gradient is counted toward the next step, which awaits `missing` more; `Location` is where to wait for it. */
            202: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description Where to wait for the step: `GET …/params?wait_for_step=<t + 1>`. */
                    Location: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "step": 12,
                     *       "received": 1,
                     *       "missing": 3,
                     *       "wait_for_step": 13
                     *     }
                     */
                    "application/json": components["schemas"]["StepAccepted"];
                };
            };
            /** @description The body is not valid JSON (or not a valid safetensors file). Or: The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-body",
                     *       "title": "Malformed request body",
                     *       "status": 400,
                     *       "detail": "the body is not valid JSON: unexpected character: line 1 column 2"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No such session, or not with this token. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/session-not-found",
                     *       "title": "Session not found",
                     *       "status": 404,
                     *       "detail": "No session with this id is visible with the token given."
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The session did not reach `wait_for_step` within `timeout`; the problem says where it is (`current_step`, and while accumulating `received` and `missing`). Or the body stopped arriving for the server's body timeout (`body-timeout`). */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/body-timeout",
                     *       "title": "Request body timed out",
                     *       "status": 408,
                     *       "detail": "no byte of the request body came for 30 s (OPTAAS_BODY_TIMEOUT_SECONDS) after 65536 bytes; send the request again",
                     *       "received_bytes": 65536
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description `If-Match` lists no tag the session has: nothing applied (`current_step` says where). */
            412: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/precondition-failed",
                     *       "title": "Precondition failed",
                     *       "status": 412,
                     *       "detail": "the session is at step 8, not 7",
                     *       "current_step": 8
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is over its limit: the server's, JSON's (send safetensors), or what this session's step needs; the problem says which. */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/payload-too-large",
                     *       "title": "Request body too large",
                     *       "status": 413,
                     *       "detail": "the request body declares 40000512 bytes; JSON bodies may have up to 33554432 bytes (OPTAAS_MAX_JSON_BODY_BYTES): JSON is for small models, send large ones as safetensors (application/vnd.safetensors)",
                     *       "max_body_bytes": 33554432
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is not of a media type this operation takes. */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/unsupported-media-type",
                     *       "title": "Unsupported media type",
                     *       "status": 415,
                     *       "detail": "this endpoint takes application/json, not text/plain",
                     *       "supported": [
                     *         "application/json"
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/gradient-mismatch",
                     *       "title": "Gradient does not match the parameters",
                     *       "status": 422,
                     *       "detail": "the gradient of 'w' has shape [1, 2], expected [2, 2]",
                     *       "tensor": "w",
                     *       "expected_shape": [
                     *         2,
                     *         2
                     *       ],
                     *       "got_shape": [
                     *         1,
                     *         2
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "sessions-get_params": {
        parameters: {
            query?: {
                /** @description Answer once the session has reached this step (t ≥ it), e.g. the `wait_for_step` of a 202; 408 if it has not within `timeout`. */
                wait_for_step?: number | null;
                /** @description Seconds to wait for `wait_for_step` (default 10, at most the server's `OPTAAS_MAX_WAIT_SECONDS`). */
                timeout?: number | null;
                /** @description `eval`: the weights to evaluate and ship rather than θ — schedule-free's x (θ is y, where gradients are taken), ASGD's average `ax`; θ itself for the other types. */
                for?: "eval" | null;
            };
            header?: never;
            path: {
                /** @description The session's id (a UUID), from its creation. */
                session_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "step": 1,
                     *       "params": {
                     *         "w": [
                     *           [
                     *             0.0999,
                     *             -0.1999
                     *           ],
                     *           [
                     *             0.2999,
                     *             0.0001
                     *           ]
                     *         ],
                     *         "b": [
                     *           0,
                     *           0
                     *         ]
                     *       }
                     *     }
                     */
                    "application/json": components["schemas"]["ParamsResponse"];
                    "application/vnd.safetensors": Uint8Array;
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No such session, or not with this token. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/session-not-found",
                     *       "title": "Session not found",
                     *       "status": 404,
                     *       "detail": "No session with this id is visible with the token given."
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The session did not reach `wait_for_step` within `timeout`; the problem says where it is (`current_step`, and while accumulating `received` and `missing`). Or the body stopped arriving for the server's body timeout (`body-timeout`). */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/wait-timeout",
                     *       "title": "Timed out waiting for the step",
                     *       "status": 408,
                     *       "detail": "waited 5 s for step 13; the session is at step 12, with 3 of 4 gradients received for step 13 (1 missing)",
                     *       "current_step": 12,
                     *       "wait_for_step": 13,
                     *       "timeout": 5,
                     *       "received": 3,
                     *       "missing": 1
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/validation-error",
                     *       "title": "Request validation failed",
                     *       "status": 422,
                     *       "detail": "query.limit: Input should be less than or equal to 1000",
                     *       "errors": [
                     *         {
                     *           "loc": [
                     *             "query",
                     *             "limit"
                     *           ],
                     *           "msg": "Input should be less than or equal to 1000",
                     *           "type": "less_than_equal"
                     *         }
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "sessions-fork_session": {
        parameters: {
            query?: never;
            header?: {
                /** @description Any string of 1 to 255 characters (a UUID is best). The first request with this key is applied and its answer kept; a repeat gets the kept answer (`Idempotent-Replayed: true`) and applies nothing; the key with a different request is a 422. */
                "Idempotency-Key"?: string;
                /** @description Apply only if the session is at this step: its `ETag`, e.g. `"12"`, a list of them, or `*`. Otherwise 412 with `current_step`. */
                "If-Match"?: string;
            };
            path: {
                /** @description The session's id (a UUID), from its creation. */
                session_id: string;
            };
            cookie?: never;
        };
        requestBody?: {
            content: {
                "application/json": components["schemas"]["SessionPatch"];
            };
        };
        responses: {
            /** @description The new session; its `token` is shown only here. */
            201: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description The new session's URL. */
                    Location: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "id": "7d0c6f1e-2b8a-4c1e-9f3a-5e2d1c0b9a87",
                     *       "name": "mnist-mlp",
                     *       "dtype": "float32",
                     *       "layout": "named",
                     *       "shapes": {
                     *         "w": [
                     *           2,
                     *           2
                     *         ],
                     *         "b": [
                     *           2
                     *         ]
                     *       },
                     *       "optimizer": {
                     *         "type": "adam",
                     *         "lr": 0.01,
                     *         "betas": [
                     *           0.9,
                     *           0.999
                     *         ],
                     *         "eps": 1e-8,
                     *         "weight_decay": 0,
                     *         "amsgrad": false,
                     *         "decoupled_weight_decay": false,
                     *         "maximize": false
                     *       },
                     *       "schedule": {
                     *         "type": "warmup",
                     *         "warmup_steps": 100,
                     *         "then": {
                     *           "type": "cosine",
                     *           "total_steps": 10000,
                     *           "min_lr": 0
                     *         }
                     *       },
                     *       "clip_grad_norm": 1,
                     *       "clip_grad_value": null,
                     *       "nonfinite": "reject",
                     *       "groups": null,
                     *       "accumulate": 1,
                     *       "step": 1,
                     *       "accumulated": 0,
                     *       "lr": 0.0001,
                     *       "last_loss": 0.42,
                     *       "created_at": "2026-11-25T09:30:00.123456Z",
                     *       "updated_at": "2026-11-25T09:30:00.123456Z",
                     *       "token": "x2Lw9Vq7…(43 characters)"
                     *     }
                     */
                    "application/json": components["schemas"]["CreatedSession"];
                };
            };
            /** @description The body is not valid JSON (or not a valid safetensors file). Or: The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-body",
                     *       "title": "Malformed request body",
                     *       "status": 400,
                     *       "detail": "the body is not valid JSON: unexpected character: line 1 column 2"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No such session, or not with this token. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/session-not-found",
                     *       "title": "Session not found",
                     *       "status": 404,
                     *       "detail": "No session with this id is visible with the token given."
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The session did not reach `wait_for_step` within `timeout`; the problem says where it is (`current_step`, and while accumulating `received` and `missing`). Or the body stopped arriving for the server's body timeout (`body-timeout`). */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/body-timeout",
                     *       "title": "Request body timed out",
                     *       "status": 408,
                     *       "detail": "no byte of the request body came for 30 s (OPTAAS_BODY_TIMEOUT_SECONDS) after 65536 bytes; send the request again",
                     *       "received_bytes": 65536
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description `If-Match` lists no tag the session has: nothing applied (`current_step` says where). */
            412: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/precondition-failed",
                     *       "title": "Precondition failed",
                     *       "status": 412,
                     *       "detail": "the session is at step 8, not 7",
                     *       "current_step": 8
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is over its limit: the server's, JSON's (send safetensors), or what this session's step needs; the problem says which. */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/payload-too-large",
                     *       "title": "Request body too large",
                     *       "status": 413,
                     *       "detail": "the request body declares 40000512 bytes; JSON bodies may have up to 33554432 bytes (OPTAAS_MAX_JSON_BODY_BYTES): JSON is for small models, send large ones as safetensors (application/vnd.safetensors)",
                     *       "max_body_bytes": 33554432
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is not of a media type this operation takes. */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/unsupported-media-type",
                     *       "title": "Unsupported media type",
                     *       "status": 415,
                     *       "detail": "this endpoint takes application/json, not text/plain",
                     *       "supported": [
                     *         "application/json"
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/validation-error",
                     *       "title": "Request validation failed",
                     *       "status": 422,
                     *       "detail": "query.limit: Input should be less than or equal to 1000",
                     *       "errors": [
                     *         {
                     *           "loc": [
                     *             "query",
                     *             "limit"
                     *           ],
                     *           "msg": "Input should be less than or equal to 1000",
                     *           "type": "less_than_equal"
                     *         }
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description Too many requests of this kind from this API key (or address, on a server without keys): send it again after `Retry-After` seconds. */
            429: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/rate-limited",
                     *       "title": "Too many requests",
                     *       "status": 429,
                     *       "detail": "more creation requests from this API key than its limit of 10 per 1 second; send it again after 1 s",
                     *       "retry_after": 1,
                     *       "limit": "10 per 1 second"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "sessions-get_state": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The session's id (a UUID), from its creation. */
                session_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The export (`optaas-state/1`), in JSON or as a safetensors file. */
            200: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "format": "optaas-state/1",
                     *       "id": "262f9dfc-5a37-4d26-9a35-c1b7a0c3f1de",
                     *       "name": "mnist-mlp",
                     *       "dtype": "float32",
                     *       "layout": "named",
                     *       "tensors": [
                     *         "w",
                     *         "b"
                     *       ],
                     *       "config": {
                     *         "optimizer": {
                     *           "type": "adam",
                     *           "lr": 0.01,
                     *           "betas": [
                     *             0.9,
                     *             0.999
                     *           ],
                     *           "eps": 1e-8,
                     *           "weight_decay": 0,
                     *           "amsgrad": false,
                     *           "decoupled_weight_decay": false,
                     *           "maximize": false
                     *         },
                     *         "schedule": {
                     *           "type": "warmup",
                     *           "warmup_steps": 100,
                     *           "then": {
                     *             "type": "cosine",
                     *             "total_steps": 10000,
                     *             "min_lr": 0
                     *           }
                     *         },
                     *         "clip_grad_norm": 1,
                     *         "clip_grad_value": null,
                     *         "nonfinite": "reject",
                     *         "groups": null,
                     *         "accumulate": 1
                     *       },
                     *       "step": 1,
                     *       "schedule_state": {},
                     *       "last_loss": 0.42,
                     *       "params": {
                     *         "w": [
                     *           [
                     *             0.0999,
                     *             -0.1999
                     *           ],
                     *           [
                     *             0.2999,
                     *             0.0001
                     *           ]
                     *         ],
                     *         "b": [
                     *           -0.0001,
                     *           0.0001
                     *         ]
                     *       },
                     *       "state": {
                     *         "w": {
                     *           "exp_avg": [
                     *             [
                     *               0.05,
                     *               -0.1
                     *             ],
                     *             [
                     *               0.025,
                     *               0.2
                     *             ]
                     *           ],
                     *           "exp_avg_sq": [
                     *             [
                     *               0.00025,
                     *               0.001
                     *             ],
                     *             [
                     *               0.0000625,
                     *               0.004
                     *             ]
                     *           ],
                     *           "step": 1
                     *         },
                     *         "b": {
                     *           "exp_avg": [
                     *             0.01,
                     *             -0.01
                     *           ],
                     *           "exp_avg_sq": [
                     *             0.00001,
                     *             0.00001
                     *           ],
                     *           "step": 1
                     *         }
                     *       }
                     *     }
                     */
                    "application/json": components["schemas"]["StateExport"];
                    "application/vnd.safetensors": Uint8Array;
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No such session, or not with this token. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/session-not-found",
                     *       "title": "Session not found",
                     *       "status": 404,
                     *       "detail": "No session with this id is visible with the token given."
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/validation-error",
                     *       "title": "Request validation failed",
                     *       "status": 422,
                     *       "detail": "query.limit: Input should be less than or equal to 1000",
                     *       "errors": [
                     *         {
                     *           "loc": [
                     *             "query",
                     *             "limit"
                     *           ],
                     *           "msg": "Input should be less than or equal to 1000",
                     *           "type": "less_than_equal"
                     *         }
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "sessions-import_session": {
        parameters: {
            query?: never;
            header?: {
                /** @description Any string of 1 to 255 characters (a UUID is best). The first request with this key is applied and its answer kept; a repeat gets the kept answer (`Idempotent-Replayed: true`) and applies nothing; the key with a different request is a 422. */
                "Idempotency-Key"?: string;
            };
            path?: never;
            cookie?: never;
        };
        /** @description JSON (`application/json`) or, for large models, a safetensors file (`application/vnd.safetensors`): an export as `GET …/state` answers it with `Accept: application/vnd.safetensors` (`param/<tensor>` and `<slot>/<tensor>` arrays, the rest in `__metadata__`). */
        requestBody: {
            content: {
                "application/json": components["schemas"]["StateExport"];
                "application/vnd.safetensors": Uint8Array;
            };
        };
        responses: {
            /** @description The new session; its `token` is shown only here. */
            201: {
                headers: {
                    /** @description The session's step count as an entity tag, e.g. `"12"` (for `If-Match`). */
                    ETag: string;
                    /** @description The new session's URL. */
                    Location: string;
                    /** @description `true` when this is the kept answer to an earlier request with the same `Idempotency-Key` (nothing was applied now). */
                    "Idempotent-Replayed"?: "true";
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "id": "0b6a1f57-93d4-4e0b-8c55-2f7e6a9d3c10",
                     *       "name": "mnist-mlp",
                     *       "dtype": "float32",
                     *       "layout": "named",
                     *       "shapes": {
                     *         "w": [
                     *           2,
                     *           2
                     *         ],
                     *         "b": [
                     *           2
                     *         ]
                     *       },
                     *       "optimizer": {
                     *         "type": "adam",
                     *         "lr": 0.01,
                     *         "betas": [
                     *           0.9,
                     *           0.999
                     *         ],
                     *         "eps": 1e-8,
                     *         "weight_decay": 0,
                     *         "amsgrad": false,
                     *         "decoupled_weight_decay": false,
                     *         "maximize": false
                     *       },
                     *       "schedule": {
                     *         "type": "warmup",
                     *         "warmup_steps": 100,
                     *         "then": {
                     *           "type": "cosine",
                     *           "total_steps": 10000,
                     *           "min_lr": 0
                     *         }
                     *       },
                     *       "clip_grad_norm": 1,
                     *       "clip_grad_value": null,
                     *       "nonfinite": "reject",
                     *       "groups": null,
                     *       "accumulate": 1,
                     *       "step": 1,
                     *       "accumulated": 0,
                     *       "lr": 0.0001,
                     *       "last_loss": 0.42,
                     *       "created_at": "2026-11-25T09:30:00.123456Z",
                     *       "updated_at": "2026-11-25T09:30:00.123456Z",
                     *       "token": "Hk3pZr0m…(43 characters)"
                     *     }
                     */
                    "application/json": components["schemas"]["CreatedSession"];
                };
            };
            /** @description The body is not valid JSON (or not a valid safetensors file). Or: The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-body",
                     *       "title": "Malformed request body",
                     *       "status": 400,
                     *       "detail": "the body is not valid JSON: unexpected character: line 1 column 2"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The session did not reach `wait_for_step` within `timeout`; the problem says where it is (`current_step`, and while accumulating `received` and `missing`). Or the body stopped arriving for the server's body timeout (`body-timeout`). */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/body-timeout",
                     *       "title": "Request body timed out",
                     *       "status": 408,
                     *       "detail": "no byte of the request body came for 30 s (OPTAAS_BODY_TIMEOUT_SECONDS) after 65536 bytes; send the request again",
                     *       "received_bytes": 65536
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is over its limit: the server's, JSON's (send safetensors), or what this session's step needs; the problem says which. */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/payload-too-large",
                     *       "title": "Request body too large",
                     *       "status": 413,
                     *       "detail": "the request body declares 40000512 bytes; JSON bodies may have up to 33554432 bytes (OPTAAS_MAX_JSON_BODY_BYTES): JSON is for small models, send large ones as safetensors (application/vnd.safetensors)",
                     *       "max_body_bytes": 33554432
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is not of a media type this operation takes. */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/unsupported-media-type",
                     *       "title": "Unsupported media type",
                     *       "status": 415,
                     *       "detail": "this endpoint takes application/json, not text/plain",
                     *       "supported": [
                     *         "application/json"
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/invalid-content",
                     *       "title": "Invalid content",
                     *       "status": 422,
                     *       "detail": "state.w.exp_avg has shape [2], expected [2, 2]",
                     *       "field": "state.w.exp_avg",
                     *       "tensor": "w",
                     *       "expected_shape": [
                     *         2,
                     *         2
                     *       ],
                     *       "got_shape": [
                     *         2
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description Too many requests of this kind from this API key (or address, on a server without keys): send it again after `Retry-After` seconds. */
            429: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/rate-limited",
                     *       "title": "Too many requests",
                     *       "status": 429,
                     *       "detail": "more creation requests from this API key than its limit of 10 per 1 second; send it again after 1 s",
                     *       "retry_after": 1,
                     *       "limit": "10 per 1 second"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "history-get_history": {
        parameters: {
            query?: {
                /** @description Show records with `seq` greater than this (0: from the start). */
                after?: number;
                /** @description Most records in this page. */
                limit?: number;
            };
            header?: never;
            path: {
                /** @description The session's id (a UUID), from its creation. */
                session_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Records in the order they happened, and the cursor of the next page. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "records": [
                     *         {
                     *           "seq": 1,
                     *           "kind": "step",
                     *           "step": 1,
                     *           "lr": 0.0001,
                     *           "loss": 0.42,
                     *           "grad_norm": 2.3092206480576105,
                     *           "update_norm": 0.00014142135,
                     *           "skipped": false,
                     *           "at": "2026-11-25T09:30:00.123456Z",
                     *           "duration_ms": 1.31
                     *         },
                     *         {
                     *           "seq": 2,
                     *           "kind": "change",
                     *           "step": 1,
                     *           "at": "2026-11-25T09:30:00.123456Z",
                     *           "changes": {
                     *             "optimizer.lr": {
                     *               "old": 0.01,
                     *               "new": 0.005
                     *             }
                     *           }
                     *         },
                     *         {
                     *           "seq": 3,
                     *           "kind": "step",
                     *           "step": 1,
                     *           "lr": 0.00005,
                     *           "loss": null,
                     *           "grad_norm": null,
                     *           "update_norm": 0,
                     *           "skipped": true,
                     *           "at": "2026-11-25T09:30:00.123456Z",
                     *           "duration_ms": 1.31
                     *         }
                     *       ],
                     *       "next": 3
                     *     }
                     */
                    "application/json": components["schemas"]["HistoryPage"];
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No bearer token (or, for creation, no valid API key). */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/token-missing",
                     *       "title": "Bearer token required",
                     *       "status": 401,
                     *       "detail": "this endpoint needs the session's token: Authorization: Bearer <token>"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description No such session, or not with this token. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/session-not-found",
                     *       "title": "Session not found",
                     *       "status": 404,
                     *       "detail": "No session with this id is visible with the token given."
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/validation-error",
                     *       "title": "Request validation failed",
                     *       "status": 422,
                     *       "detail": "query.limit: Input should be less than or equal to 1000",
                     *       "errors": [
                     *         {
                     *           "loc": [
                     *             "query",
                     *             "limit"
                     *           ],
                     *           "msg": "Input should be less than or equal to 1000",
                     *           "type": "less_than_equal"
                     *         }
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "schedules-preview_schedule": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["SchedulePreviewRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "lr": [
                     *         0.05,
                     *         0.1,
                     *         0.1,
                     *         0.08535533905932738,
                     *         0.05,
                     *         0.014644660940672627
                     *       ],
                     *       "estimated": false
                     *     }
                     */
                    "application/json": components["schemas"]["SchedulePreview"];
                };
            };
            /** @description The body is not valid JSON (or not a valid safetensors file). Or: The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-body",
                     *       "title": "Malformed request body",
                     *       "status": 400,
                     *       "detail": "the body is not valid JSON: unexpected character: line 1 column 2"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The session did not reach `wait_for_step` within `timeout`; the problem says where it is (`current_step`, and while accumulating `received` and `missing`). Or the body stopped arriving for the server's body timeout (`body-timeout`). */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/body-timeout",
                     *       "title": "Request body timed out",
                     *       "status": 408,
                     *       "detail": "no byte of the request body came for 30 s (OPTAAS_BODY_TIMEOUT_SECONDS) after 65536 bytes; send the request again",
                     *       "received_bytes": 65536
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is over its limit: the server's, JSON's (send safetensors), or what this session's step needs; the problem says which. */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/payload-too-large",
                     *       "title": "Request body too large",
                     *       "status": 413,
                     *       "detail": "the request body declares 40000512 bytes; JSON bodies may have up to 33554432 bytes (OPTAAS_MAX_JSON_BODY_BYTES): JSON is for small models, send large ones as safetensors (application/vnd.safetensors)",
                     *       "max_body_bytes": 33554432
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is not of a media type this operation takes. */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/unsupported-media-type",
                     *       "title": "Unsupported media type",
                     *       "status": 415,
                     *       "detail": "this endpoint takes application/json, not text/plain",
                     *       "supported": [
                     *         "application/json"
                     *       ]
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The content is invalid; the problem says where (`errors`, `field`, `tensor`, …). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/invalid-hyper-parameter",
                     *       "title": "Invalid hyper-parameter",
                     *       "status": 422,
                     *       "detail": "schedule.then.total_steps: must be >= 1, got 0",
                     *       "field": "schedule.then.total_steps"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description Too many requests of this kind from this API key (or address, on a server without keys): send it again after `Retry-After` seconds. */
            429: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/rate-limited",
                     *       "title": "Too many requests",
                     *       "status": 429,
                     *       "detail": "more creation requests from this API key than its limit of 10 per 1 second; send it again after 1 s",
                     *       "retry_after": 1,
                     *       "limit": "10 per 1 second"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "health-healthz": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "status": "ok"
                     *     }
                     */
                    "application/json": components["schemas"]["Health"];
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "health-healthz_head": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "status": "ok"
                     *     }
                     */
                    "application/json": components["schemas"]["Health"];
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "health-readyz": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "status": "ok"
                     *     }
                     */
                    "application/json": components["schemas"]["Health"];
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "health-readyz_head": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "status": "ok"
                     *     }
                     */
                    "application/json": components["schemas"]["Health"];
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The database cannot be reached, or the session stayed locked past the server's lock timeout: send the request again after `Retry-After` seconds. */
            503: {
                headers: {
                    /** @description Seconds to wait before sending the request again. */
                    "Retry-After": number;
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/service-unavailable",
                     *       "title": "Service unavailable",
                     *       "status": 503,
                     *       "detail": "the database does not answer: OperationalError"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    "operations-get_metrics": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The Prometheus text exposition format, version 0.0.4. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example # HELP optaas_steps_total Step requests answered, by …
                     *     # TYPE optaas_steps_total counter
                     *     optaas_steps_total{optimizer="adam",outcome="applied"} 1200.0
                     *     # HELP optaas_sessions Sessions stored in the database.
                     *     # TYPE optaas_sessions gauge
                     *     optaas_sessions 3.0
                     */
                    "text/plain": unknown;
                };
            };
            /** @description The request is not valid HTTP/1.1 (request line, headers or body framing): the server's protocol layer answers it before any route (`/problems/malformed-request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "type": "/problems/malformed-request",
                     *       "title": "Malformed HTTP request",
                     *       "status": 400,
                     *       "detail": "the request is not valid HTTP/1.1 (request line, headers or body framing)"
                     *     }
                     */
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
}
