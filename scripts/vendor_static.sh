#!/usr/bin/env bash
# Fetch the browser libraries that the app serves itself (no CDN) from the npm registry, with npm's
# own client, into app/static/vendor/. Run from the repository root; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."

SWAGGER_UI=swagger-ui-dist@5.35.0
REDOC=redoc@2.5.4  # FastAPI's default major version; 3.x sends telemetry
UPLOT=uplot@1.6.32

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$SWAGGER_UI" "$REDOC" "$UPLOT" >/dev/null)
for tarball in "$work"/*.tgz; do
    mkdir -p "${tarball%.tgz}" && tar -xzf "$tarball" -C "${tarball%.tgz}"
done

vendor=app/static/vendor
rm -rf "$vendor" && mkdir -p "$vendor"/{swagger-ui,redoc,uplot}
swagger=("$work"/swagger-ui-dist-*/package)
cp "${swagger[0]}"/{swagger-ui-bundle.js,swagger-ui.css,favicon-32x32.png,LICENSE,NOTICE} \
    "$vendor/swagger-ui/"
redoc=("$work"/redoc-*/package)
cp "${redoc[0]}"/bundles/redoc.standalone.js "${redoc[0]}"/LICENSE "$vendor/redoc/"
uplot=("$work"/uplot-*/package)
cp "${uplot[0]}"/dist/{uPlot.iife.min.js,uPlot.min.css} "${uplot[0]}"/LICENSE "$vendor/uplot/"

# Source-map comments would make a browser's developer tools ask for files we do not ship.
sed -i '/^\/\/# sourceMappingURL=/d' "$vendor"/*/*.js
sed -i 's|/\*# sourceMappingURL=[^*]*\*/||' "$vendor"/*/*.css
# Redoc's sidebar shows a logo fetched from Redocly's CDN, with no option to turn it off. An empty
# src fails at once without a request, and the component then hides the image (its onError).
logo='src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'
grep -qF "$logo" "$vendor/redoc/redoc.standalone.js"
sed -i "s|$logo|src:\"\"|" "$vendor/redoc/redoc.standalone.js"
if grep -qE 'https://cdn\.' "$vendor/redoc/redoc.standalone.js"; then
    echo "redoc.standalone.js still refers to a CDN" >&2
    exit 1
fi

printf '%s\n' "$SWAGGER_UI" "$REDOC" "$UPLOT" > "$vendor/VERSIONS"
