#!/usr/bin/env bash
# optaas from the shell — curl for HTTP, jq for JSON: the calls any language makes.
#
# Fits θ to a target by gradient descent on L(θ) = ½‖θ − target‖², whose gradient θ − target
# is computed here, with jq, from the parameters the service answers. Then a retry with the same
# Idempotency-Key (replayed, not applied twice), a stale If-Match (412), a gradient of the wrong
# shape (422), the history, and the deletion.
#
# Usage: examples/walkthrough.sh [URL]        (default: $OPTAAS_URL or http://127.0.0.1:8000)
#        STEPS=20 examples/walkthrough.sh      (the number of gradient steps)
set -euo pipefail

URL=${1:-${OPTAAS_URL:-http://127.0.0.1:8000}}
STEPS=${STEPS:-20}
TARGET='[1, -2, 3]'
JSON='Content-Type: application/json'

post() { curl -sS --fail-with-body -X POST "$@"; }

# 1. A session: θ₀ = [0, 0, 0] as one array (the "single" form), float64, SGD with lr 0.5.
#    The answer holds its id and its token, shown only here.
created=$(post "$URL/v1/sessions" -H "$JSON" \
    -d '{"name": "shell", "params": [0, 0, 0], "dtype": "float64",
         "optimizer": {"type": "sgd", "lr": 0.5}}')
ID=$(jq -r .id <<<"$created")
AUTH="Authorization: Bearer $(jq -r .token <<<"$created")"
echo "session $ID: $(jq -c '{optimizer, dtype, layout, shapes, step}' <<<"$created")"

params=$(curl -sS --fail-with-body "$URL/v1/sessions/$ID/params" -H "$AUTH" | jq -c .params)

# 2. The training loop: gradient and loss from θ, one POST per step, each with its own
#    Idempotency-Key, so that a retry after a lost answer is never applied twice.
for t in $(seq 1 "$STEPS"); do
    body=$(jq -nc --argjson theta "$params" --argjson target "$TARGET" '
        [range($theta | length) as $i | $theta[$i] - $target[$i]] as $g
        | {gradients: $g, loss: ([$g[] | . * .] | add / 2)}')
    answer=$(post "$URL/v1/sessions/$ID/step" -H "$AUTH" -H "$JSON" \
        -H "Idempotency-Key: walkthrough-$ID-$t" -d "$body")
    params=$(jq -c .params <<<"$answer")
    if (( t % 5 == 0 )); then
        echo "step $(jq .step <<<"$answer"): loss $(jq .loss <<<"$body") → θ = $params"
    fi
done

# 3. The last request again, same key: the kept answer comes back and nothing is applied.
replayed=$(post "$URL/v1/sessions/$ID/step" -H "$AUTH" -H "$JSON" \
    -H "Idempotency-Key: walkthrough-$ID-$STEPS" -d "$body" -D - -o /dev/null \
    | tr -d '\r' | awk -F': ' 'tolower($1) == "idempotent-replayed" {print $2}')
echo "retry of step $STEPS: Idempotent-Replayed: $replayed"

# 4. A step conditional on a step count the session has left behind: 412, with the current one.
stale=$(curl -sS -X POST "$URL/v1/sessions/$ID/step" -H "$AUTH" -H "$JSON" -H 'If-Match: "0"' \
    -d "$body")
echo "If-Match \"0\": $(jq -c '{status, current_step}' <<<"$stale")"

# 5. A gradient that does not fit: 422, saying which tensor and how; nothing changes.
wrong=$(curl -sS -X POST "$URL/v1/sessions/$ID/step" -H "$AUTH" -H "$JSON" \
    -d '{"gradients": [1, 2]}')
echo "wrong shape: $(jq -r '"\(.status) \(.detail)"' <<<"$wrong")"

# 6. The history: one record per step, with its rate and loss.
history=$(curl -sS --fail-with-body "$URL/v1/sessions/$ID/history?limit=1000" -H "$AUTH")
echo "history: $(jq '.records | length' <<<"$history") records, last $(jq -c \
    '.records[-1] | {step, lr, loss}' <<<"$history")"

echo "final step: $(curl -sS --fail-with-body "$URL/v1/sessions/$ID" -H "$AUTH" | jq .step)"
echo "final params: $params"

# 7. Delete it (204).
curl -sS --fail-with-body -X DELETE "$URL/v1/sessions/$ID" -H "$AUTH" -o /dev/null \
    -w 'deleted: %{http_code}\n'
