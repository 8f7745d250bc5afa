#!/usr/bin/env bash
# The browser worker's benchmarks (docs/benchmarks.md, "Browser worker"): dpow's WASM solver
# per thread and on every thread, its WebGL2 solver, and the npm peers a browser user has
# today (nano-pow's WASM, WebGL and CPU paths; nanocurrency's computeWork), all in one run of
# one headless Chromium, served from loopback.
#
#   scripts/browser-bench.sh [--seconds N] [--not-isolated]
#
# --seconds: per figure (default 10). The page is served cross-origin isolated (COOP/COEP),
# as a node serves /contribute, so dpow's workers stop through shared memory;
# --not-isolated serves it without, and the workers yield to read cancel messages instead.
#
# Needs Debian's rustc with the wasm32 std (scripts/deps.sh installs it), chromium, npm and
# python3. The npm packages go to target/browser-bench/, never into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
isolated=1
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --not-isolated) isolated=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "browser-bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

NANO_POW=nano-pow@5.1.9
NANOCURRENCY=nanocurrency@2.5.0
dir=target/browser-bench
site="$dir/site"
rm -rf "$site" "$dir/profile"
mkdir -p "$site/browser" "$site/npm/nano-pow" "$site/npm/nanocurrency"

# The kernel, with the flags node/build.rs uses.
"${DPOW_WASM_RUSTC:-/usr/bin/rustc}" --edition=2021 --crate-type=cdylib --crate-name=dpow_wasm \
  --target=wasm32-unknown-unknown -Copt-level=3 -Cpanic=abort -Ctarget-feature=+simd128 \
  -Cstrip=symbols wasm/kernel.rs -o "$site/browser/dpow.wasm"
cp node/assets/browser/*.js "$site/browser/"
cp scripts/browser-bench.html "$site/bench.html"

if [[ ! -d "$dir/npm/node_modules/nano-pow" || ! -d "$dir/npm/node_modules/nanocurrency" ]]; then
  mkdir -p "$dir/npm"
  [[ -f "$dir/npm/package.json" ]] || (cd "$dir/npm" && npm init -y >/dev/null)
  (cd "$dir/npm" && npm install --no-audit --no-fund --silent "$NANO_POW" "$NANOCURRENCY")
fi
cp "$dir/npm/node_modules/nano-pow/dist/main.min.js" "$site/npm/nano-pow/"
cp "$dir/npm/node_modules/nanocurrency/dist/nanocurrency.umd.js" "$site/npm/nanocurrency/"

# A loopback server for the site that prints the page's report and stops.
report="$dir/report.json"
rm -f "$report" "$dir/port"
python3 - "$site" "$dir/port" "$report" "$isolated" <<'EOF' &
import http.server, sys, threading
site, port_file, report, isolated = sys.argv[1:5]
class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      '.js': 'text/javascript', '.wasm': 'application/wasm'}
    def __init__(self, *a, **k):
        super().__init__(*a, directory=site, **k)
    def log_message(self, *a):
        pass
    def end_headers(self):
        if isolated == '1':
            self.send_header('Cross-Origin-Opener-Policy', 'same-origin')
            self.send_header('Cross-Origin-Embedder-Policy', 'require-corp')
        super().end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length', 0)))
        self.send_response(200)
        self.end_headers()
        if self.path == '/report':
            open(report, 'wb').write(body)
            threading.Thread(target=self.server.shutdown).start()
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
open(port_file, 'w').write(str(server.server_address[1]))
server.serve_forever()
EOF
server=$!
trap 'kill $server 2>/dev/null || true; [[ -n "${browser:-}" ]] && kill $browser 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -s "$dir/port" ]] && break; sleep 0.1; done
port=$(cat "$dir/port")

chrome=$(command -v chromium || command -v chromium-browser)
"$chrome" --headless --no-sandbox --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync \
  --use-gl=angle --use-angle=swiftshader --enable-unsafe-swiftshader \
  --user-data-dir="$dir/profile" "http://127.0.0.1:$port/bench.html?seconds=$seconds" \
  >"$dir/chromium.log" 2>&1 &
browser=$!
echo "running in $("$chrome" --version 2>/dev/null | head -1) ($seconds s per figure)..." >&2
wait "$server" || true
[[ -s "$report" ]] || { echo "no report; see $dir/chromium.log" >&2; exit 1; }

python3 - "$report" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['userAgent']}\n{r['threads']} hardware threads; cross-origin isolated: {r['isolated']}; "
      f"solved rates at threshold {r['threshold']}\n")
print("| solver | threads | measured | rate | |")
print("|---|---|---|---|---|")
for x in r['results']:
    if 'error' in x:
        print(f"| {x['name']} | {x.get('threads', '')} | {x.get('method', '')} | failed | {x['error']} |")
        continue
    if 'solves' in x:
        # A solve's hash count is geometric: n solves give the rate to about ±1.96/√n (95%).
        ci = 196 / max(x['solves'], 1) ** 0.5
        extra = f"{x['solves']} solves in {x['seconds']:.1f} s, ±{ci:.0f}%"
        if 'hashed' in x:
            extra += f"; hashed {x['hashed'] / 1e6:.2f} MH/s"
        if 'inKernel' in x:
            extra += f", {100 * x['inKernel']:.1f}% of the time in the kernel"
    else:
        extra = x.get('note', '')
    print(f"| {x['name']} | {x['threads']} | {x['method']} | {x['rate'] / 1e6:.2f} MH/s | {extra} |")
EOF
