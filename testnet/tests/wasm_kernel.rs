//! The browser worker's WebAssembly kernel (`wasm/kernel.rs`, built into the node by
//! `node/build.rs`) and its solvers (`node/assets/browser/`), run where volunteers run them:
//! - in Node.js: every published work vector, and searches that must find the first nonce
//!   meeting a threshold;
//! - in headless Chromium, from a page served on loopback: the vectors again, the Web Worker
//!   solver, the WebGL2 solver (SwiftShader), the backend race, and cancelling searches
//!   that cannot succeed (with and without cross-origin isolation).
//!
//! Every nonce is checked here with the `blake2` crate (`dpow_testkit::reference`).
//! `scripts/test.sh` sets DPOW_REQUIRE_WASM=1 and DPOW_REQUIRE_CHROMIUM=1, so in CI a missing
//! kernel, Node.js or Chromium fails these tests instead of skipping them.
#![allow(clippy::print_stderr)] // says why a test skipped itself

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dpow_node::browser_assets;
use dpow_protocol::{Root, Work};
use dpow_testkit::reference::work_value;
use serde_json::Value;

const VECTORS: &str = include_str!("../../testdata/nano.json");
const CHECK_SCRIPT: &str = include_str!("wasm/check.mjs");
const PAGE: &str = include_str!("wasm/page.html");
/// How long a page may take to report (SwiftShader on two busy cores is slow).
const REPORT_TIMEOUT: Duration = Duration::from_secs(240);

fn required() -> bool {
    std::env::var("DPOW_REQUIRE_WASM").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The kernel, or `None` (the test skips) when this build has none and none is required.
fn kernel() -> Option<&'static [u8]> {
    if browser_assets::has_browser_worker() {
        return Some(browser_assets::WASM);
    }
    let why = browser_assets::WASM_MISSING.unwrap_or("unknown");
    assert!(
        !required(),
        "DPOW_REQUIRE_WASM is set but dpow was built without the kernel: {why}"
    );
    eprintln!("skipped: dpow was built without the browser worker ({why})");
    None
}

/// Node.js, or `None` (the test skips) when it is missing and not required.
fn nodejs() -> Option<PathBuf> {
    let found = ["/usr/bin/node", "/usr/bin/nodejs", "/usr/local/bin/node"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            !required(),
            "DPOW_REQUIRE_WASM is set but Node.js is missing"
        );
        eprintln!("skipped: no Node.js (scripts/deps.sh --test installs it)");
    }
    found
}

fn hex(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a hex string, got {v}"))
}

/// The work value of `work` for `root` (both in Nano's hex), by the `blake2` crate.
fn value(root: &str, work: &str) -> u64 {
    let root: Root = root.parse().expect("root");
    let work: Work = work.parse().expect("work");
    work_value(&root, work)
}

fn u64_hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).expect("16 hex digits")
}

/// `found` meets `threshold` for `root`.
fn assert_solves(root: &str, threshold: &str, found: &Value, what: &str) {
    let work = hex(found);
    assert!(
        value(root, work) >= u64_hex(threshold),
        "{what}: {work} does not meet {threshold} for {root}"
    );
}

/// Every vector's value as the kernel computed it equals the published one.
fn assert_vectors(got: &Value) {
    let want: Value = serde_json::from_str(VECTORS).expect("vectors");
    let want = want["work"].as_array().expect("work vectors");
    let got = got.as_array().expect("the kernel's vectors");
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["root"], w["root"]);
        assert_eq!(g["work"], w["work"]);
        assert_eq!(
            g["value"], w["value"],
            "the value of {} for {}",
            w["work"], w["root"]
        );
    }
}

#[test]
fn the_kernel_passes_the_vectors_and_finds_first_hits_in_nodejs() {
    let Some(wasm) = kernel() else { return };
    let Some(node) = nodejs() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let wasm = write("dpow.wasm", wasm);
    let script = write("check.mjs", CHECK_SCRIPT.as_bytes());
    let vectors = write("nano.json", VECTORS.as_bytes());
    let out = Command::new(node)
        .arg(script)
        .arg(wasm)
        .arg(vectors)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(got["step"], 2, "two nonces per vector");
    assert_vectors(&got["vectors"]);
    // From a vector's own work, with its value as the threshold, both searches stop at once.
    for v in got["vectors"].as_array().expect("vectors") {
        assert_eq!(v["found"]["search"], v["work"]);
        assert_eq!(v["found"]["search2"], v["work"]);
    }
    // A search from a fixed start returns the first nonce that meets the threshold.
    let searches = got["searches"].as_array().expect("searches");
    assert_eq!(searches.len(), 2);
    for s in searches {
        let (root, threshold) = (hex(&s["root"]), hex(&s["threshold"]));
        assert_solves(root, threshold, &s["work"], hex(&s["fn"]));
        let start = u64_hex(hex(&s["start"]));
        let found = u64_hex(hex(&s["work"]));
        let skipped = found.wrapping_sub(start);
        assert!(skipped < 1 << 20, "{s}: searched too far");
        for i in 0..skipped {
            let n = format!("{:016x}", start.wrapping_add(i));
            assert!(
                value(root, &n) < u64_hex(threshold),
                "{}: {n} meets the threshold before {found:016x}",
                s["fn"]
            );
        }
    }
}

/// A loopback server for the test page: the node's browser files under `/browser/`, the page,
/// the vectors, and `POST /report`, whose bodies arrive on the returned channel.
fn serve(isolated: bool) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, isolated, &tx);
            });
        }
    });
    (format!("http://{addr}"), rx)
}

/// Read one HTTP/1.1 request from `stream` and answer it.
fn answer(
    stream: TcpStream,
    isolated: bool,
    reports: &mpsc::SyncSender<String>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("").to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let (status, content_type, bytes): (&str, &str, &[u8]) = match (method.as_str(), path.as_str())
    {
        ("GET", "/page.html") => ("200 OK", "text/html; charset=utf-8", PAGE.as_bytes()),
        ("GET", "/vectors.json") => ("200 OK", "application/json", VECTORS.as_bytes()),
        ("POST", "/report") => {
            let _ = reports.try_send(String::from_utf8_lossy(&body).to_string());
            ("200 OK", "text/plain", b"")
        }
        ("GET", p) => match p.strip_prefix("/browser/").and_then(browser_assets::file) {
            Some(a) => ("200 OK", a.content_type, a.bytes),
            None => ("404 Not Found", "text/plain", b"not found"),
        },
        _ => ("405 Method Not Allowed", "text/plain", b""),
    };
    let isolation = if isolated {
        "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\n"
    } else {
        ""
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{isolation}Connection: close\r\n\r\n",
        bytes.len()
    )?;
    out.write_all(bytes)?;
    out.flush()
}

/// Headless Chromium on one page, killed when dropped.
struct Browser {
    child: Child,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(browser: &str, url: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let log = profile.path().join("chromium.log");
        let child = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // WebGL2 on the CPU: ANGLE over SwiftShader, which Chromium only allows
                // when asked to.
                "--use-gl=angle",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("chromium starts");
        Browser {
            child,
            log,
            _profile: profile,
        }
    }

    /// The page's report, or a panic with the end of Chromium's log.
    fn report(&self, reports: &mpsc::Receiver<String>) -> Value {
        let Ok(body) = reports.recv_timeout(REPORT_TIMEOUT) else {
            panic!(
                "the page never reported; chromium said:\n{}",
                tail(&self.log)
            );
        };
        let r: Value = serde_json::from_str(&body).expect("a JSON report");
        assert!(r.get("error").is_none(), "the page failed: {r}");
        r
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Open `/page.html?part=PART` in Chromium and return its report, or `None` (skipped).
fn run_page(part: &str, isolated: bool) -> Option<Value> {
    kernel()?;
    let browser = dpow_testnet::browser::chromium().expect("a browser")?;
    let (base, reports) = serve(isolated);
    let b = Browser::open(browser, &format!("{base}/page.html?part={part}"));
    Some(b.report(&reports))
}

#[test]
fn the_kernel_and_both_solvers_work_in_chromium() {
    let Some(r) = run_page("solve", false) else {
        eprintln!("skipped: no chromium or no kernel");
        return;
    };
    assert_vectors(&r["vectors"]);
    let wasm = &r["wasm"];
    assert_eq!(wasm["threads"], 2);
    assert_solves(
        hex(&wasm["root"]),
        hex(&wasm["threshold"]),
        &wasm["work"],
        "wasm",
    );
    let gl = &r["webgl"];
    assert!(gl.get("error").is_none(), "WebGL2 solver: {gl}");
    assert_solves(
        hex(&gl["root"]),
        hex(&gl["threshold"]),
        &gl["work"],
        "webgl",
    );
    // The race measured both and kept the faster one, which then solves.
    let p = &r["picked"];
    let (w, g) = (
        p["rates"]["wasm"].as_f64().expect("wasm rate"),
        p["rates"]["webgl"].as_f64().expect("webgl rate"),
    );
    assert!(w > 0.0 && g > 0.0, "{p}");
    let winner = if g > w { "webgl" } else { "wasm" };
    assert_eq!(p["backend"], winner);
    assert_eq!(p["solver"], winner);
    assert_solves(hex(&p["root"]), hex(&p["threshold"]), &p["work"], "picked");
}

#[test]
fn cancelled_searches_return_and_the_solvers_work_on() {
    // Cross-origin isolated: the workers stop at a shared flag (the other test's page, not
    // isolated, has them stop at messages).
    let Some(r) = run_page("cancel", true) else {
        eprintln!("skipped: no chromium or no kernel");
        return;
    };
    assert_eq!(r["crossOriginIsolated"], true);
    for backend in ["wasm", "webgl"] {
        let c = &r[backend];
        assert!(c.get("error").is_none(), "{backend}: {c}");
        assert_eq!(c["ran"], true, "{backend}: the search had started: {c}");
        assert_eq!(c["hashed"], true, "{backend}: {c}");
        assert!(
            c["result"].is_null(),
            "{backend}: a cancelled search found {c}"
        );
        let then = &c["then"];
        assert_solves(
            hex(&then["root"]),
            hex(&then["threshold"]),
            &then["work"],
            backend,
        );
    }
}
