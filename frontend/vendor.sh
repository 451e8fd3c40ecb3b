#!/bin/sh
# Refreshes public/vendor/ from node_modules: the browser builds of the pinned libraries
# (package.json / package-lock.json), committed so nginx serves them with no CDN and no
# build step. After changing a version in package.json:
#
#   cd frontend && npm install && ./vendor.sh      # or: npm ci && ./vendor.sh
#
# Each file is an ES module the page imports as it is. The sourceMappingURL comments are
# dropped because the maps are not shipped (a browser's devtools would ask for them).
set -eu
cd "$(dirname "$0")"
[ -d node_modules ] || { echo "run 'npm ci' in frontend/ first" >&2; exit 1; }
out=public/vendor
rm -rf "$out"
mkdir -p "$out"

copy() {  # copy SOURCE NAME: the file without its source-map comment
    grep -v '^//# sourceMappingURL=' "node_modules/$1" > "$out/$2"
}
copy marked/lib/marked.esm.js marked.esm.js
copy dompurify/dist/purify.es.mjs purify.es.js  # .js: older nginx mime.types know no .mjs, and module scripts need a JS type
# highlight.js's own prebuilt browser bundle (the `highlight.js` npm package itself is
# CommonJS sources); this ES build carries its ~40 common languages.
copy @highlightjs/cdn-assets/es/highlight.min.js highlight.min.js

cp node_modules/marked/LICENSE "$out/LICENSE.marked"
cp node_modules/dompurify/LICENSE "$out/LICENSE.dompurify"
cp node_modules/@highlightjs/cdn-assets/LICENSE "$out/LICENSE.highlight"

# Versions, for a human looking at the served folder.
node -e '
const lock = require("./package-lock.json").packages;
for (const name of ["marked", "dompurify", "@highlightjs/cdn-assets"])
  console.log(`${name} ${lock["node_modules/" + name].version}`);
' > "$out/VERSIONS"
cat "$out/VERSIONS"
