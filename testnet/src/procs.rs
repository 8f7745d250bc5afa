//! `dpow` processes for the testnet: starting a node (here or in a network namespace), its
//! HTTP, and running the `dpow` command line.

pub use crate::demo::{Args, run};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// A started node process.
pub struct NodeProc {
    /// What it does in the testnet (for the summary).
    pub role: String,
    /// The process.
    pub child: Child,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its first listen address (with `/p2p/`).
    pub listen: String,
    /// Its HTTP base URL (inside its namespace, when it runs in one).
    pub http: String,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
    /// How it was started, to start it again.
    spec: NodeSpec,
}

/// Everything [`start_node_at`] was given, kept to restart a node as it was.
#[derive(Clone, Debug)]
struct NodeSpec {
    dpow: PathBuf,
    dir: PathBuf,
    name: String,
    genesis: PathBuf,
    place: Place,
    extra: Vec<String>,
}

/// Where a node runs: a network namespace (or this one) and the addresses it listens on.
#[derive(Clone, Debug)]
pub struct Place {
    /// The namespace (`None`: the caller's).
    pub netns: Option<String>,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// The HTTP address (loopback: off loopback the statistics need a token).
    pub http: String,
}

impl Place {
    /// Loopback, on a port the system picks.
    pub fn loopback() -> Place {
        Place {
            netns: None,
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            http: "127.0.0.1:0".into(),
        }
    }
}

impl NodeProc {
    /// `GET path` on its HTTP server, parsed as JSON (from inside its namespace).
    pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.http);
        match &self.netns {
            Some(ns) => crate::netns::in_ns(ns, || http_get_json(&url))?,
            None => http_get_json(&url),
        }
    }

    /// Its `/api/events` stream, opened from inside its namespace.
    pub fn events(&self) -> anyhow::Result<EventStream> {
        match &self.netns {
            Some(ns) => crate::netns::in_ns(ns, || EventStream::open(&self.http))?,
            None => EventStream::open(&self.http),
        }
    }

    /// Its `/api/stats`.
    pub fn stats(&self) -> anyhow::Result<Value> {
        self.get_json("/api/stats")
    }

    /// `POST /` with a JSON body (the work API of a service node), from inside its namespace.
    pub fn post_json(&self, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}/", self.http);
        match &self.netns {
            Some(ns) => crate::netns::in_ns(ns, || http_post_json(&url, body))?,
            None => http_post_json(&url, body),
        }
    }

    /// Stop it as an operator would (SIGTERM) and wait until it has exited.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) takes plain integers; the pid is our unreaped child's.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM",
                    self.spec.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start it again as it was started (same data directory, key and addresses), once it has
    /// exited.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let genesis = self.spec.genesis.clone();
        self.restart_with(&genesis)
    }

    /// [`NodeProc::restart`] with another genesis file (a bootstrap node, first started
    /// before its own address was known, comes back with the network's genesis).
    pub fn restart_with(&mut self, genesis: &Path) -> anyhow::Result<()> {
        let mut s = self.spec.clone();
        s.genesis = genesis.to_path_buf();
        let fresh = start_node_at(
            &s.dpow, &s.dir, &s.name, &self.role, &s.genesis, &s.place, &s.extra,
        )?;
        *self = fresh;
        Ok(())
    }

    /// Its name (its data directory's, and its log's `NAME.log`).
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

impl Drop for NodeProc {
    /// A node process never outlives its handle: killed and reaped (a no-op if already so).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `dpow` binary beside the running test or program (`target/debug/dpow` for the test
/// suite), built with the suite's own selection when it is missing, so that RocksDB is not
/// compiled again for another feature set. It is refused when a source file of the crates it
/// is built from is newer: `cargo test --test X` builds only the tested package's binaries,
/// and a stale `dpow` would run an old node.
pub fn dpow_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the running binary's path")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the target directory")?;
    let bin = dir.join("dpow");
    if !bin.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--all-features", "--bins"])
            .status()
            .context("running cargo")?;
        if !ok.success() {
            bail!("building dpow failed");
        }
    }
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    if let (Ok(built), Some(workspace)) = (built, workspace)
        && let Some(edited) = newest_source(workspace, &DPOW_CRATES)
        && edited > built
    {
        bail!(
            "{} is older than the sources it is built from: build it with `cargo test --workspace --all-features --no-run` (or run the whole suite)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The crates the `dpow` binary is built from.
const DPOW_CRATES: [&str; 5] = ["node", "protocol", "keys", "solver", "gpu"];

/// When the newest `.rs` file or `Cargo.toml` of `crates` (under `workspace`) was written.
fn newest_source(workspace: &Path, crates: &[&str]) -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                walk(&path, newest);
            } else if path.extension().is_some_and(|x| x == "rs")
                && let Ok(m) = meta.modified()
            {
                *newest = (*newest).max(Some(m));
            }
        }
    }
    let mut newest = None;
    for c in crates {
        let root = workspace.join(c);
        walk(&root.join("src"), &mut newest);
        if let Ok(m) = std::fs::metadata(root.join("Cargo.toml")).and_then(|m| m.modified()) {
            newest = newest.max(Some(m));
        }
    }
    newest
}

/// Every child process, stopped when dropped (also on errors and panics).
#[derive(Default)]
pub struct Procs(pub Vec<NodeProc>);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.child.kill();
        }
        for p in &mut self.0 {
            let _ = p.child.wait();
        }
    }
}

/// The `dpow` program, run in a network namespace or in this one.
#[derive(Clone, Debug)]
pub struct Dpow {
    /// The binary.
    pub bin: PathBuf,
    /// The namespace to run it in (`ip netns exec`), if any.
    pub netns: Option<String>,
}

impl Dpow {
    /// The binary, run here.
    pub fn here(bin: &Path) -> Dpow {
        Dpow {
            bin: bin.to_path_buf(),
            netns: None,
        }
    }

    /// A command running it (in its namespace), logging at `info`, or at what
    /// `DPOW_TEST_LOG` says (a `DPOW_LOG` filter, to debug a test's nodes).
    pub fn cmd(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let level = std::env::var("DPOW_TEST_LOG").unwrap_or_else(|_| "info".into());
        c.env("DPOW_LOG", level);
        c
    }
}

/// Run `dpow ARGS` and return its standard output as text, or its standard error as the error.
pub fn dpow_text(dpow: &Dpow, args: &[&str]) -> anyhow::Result<String> {
    let out = dpow
        .cmd()
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running dpow {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "dpow {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("output of dpow {}", args[0]))
}

/// Register `service` under `name` with the registrar key at `registrar_key` and grant it a
/// million credits, through `dpow registry` (the demo and the namespace networks both do).
pub fn register_service(
    dpow: &Dpow,
    genesis: &str,
    registrar_key: &str,
    service: &str,
    name: &str,
) -> anyhow::Result<()> {
    let base = ["registry", "--genesis", genesis];
    let register = [
        "register-service",
        "--key",
        registrar_key,
        "--service",
        service,
    ];
    dpow_json(
        dpow,
        &[&base[..], &register[..], &["--name", name]].concat(),
    )?;
    let grant = ["grant", "--key", registrar_key, "--service", service];
    dpow_json(
        dpow,
        &[&base[..], &grant[..], &["--credits", "1000000"]].concat(),
    )?;
    Ok(())
}

/// Run `dpow --json ARGS` and parse its output.
pub fn dpow_json(dpow: &Dpow, args: &[&str]) -> anyhow::Result<Value> {
    let out = dpow
        .cmd()
        .arg("--json")
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running dpow {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "dpow {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("output of dpow {}", args[0]))
}

pub(crate) fn field(v: &Value, k: &str) -> anyhow::Result<String> {
    v[k].as_str()
        .map(str::to_string)
        .with_context(|| format!("missing {k} in {v}"))
}

/// Start `dpow --json node ...` (data in `dir/name`, log in `dir/name.log`) and wait for its
/// start-up report on stdout.
pub fn start_node(
    dpow: &Path,
    dir: &Path,
    name: &str,
    role: &str,
    genesis: &Path,
    extra: &[String],
) -> anyhow::Result<NodeProc> {
    start_node_at(dpow, dir, name, role, genesis, &Place::loopback(), extra)
}

/// [`start_node`] at a [`Place`]: in a network namespace (`ip netns exec NS dpow ...`, HTTP on
/// that namespace's loopback) with its listen addresses. The log is appended to, so that a
/// restarted node's log follows its earlier life.
pub fn start_node_at(
    dpow: &Path,
    dir: &Path,
    name: &str,
    role: &str,
    genesis: &Path,
    place: &Place,
    extra: &[String],
) -> anyhow::Result<NodeProc> {
    let log = dir.join(format!("{name}.log"));
    let cli = Dpow {
        bin: dpow.to_path_buf(),
        netns: place.netns.clone(),
    };
    let mut cmd = cli.cmd();
    cmd.arg("--json")
        .arg("node")
        .arg("--genesis")
        .arg(genesis)
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--listen")
        .arg(place.listen.join(","))
        .arg("--http")
        .arg(&place.http)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .context("creating a log file")?,
        );
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("node stdout")?;
    let mut text = String::new();
    let mut reader = BufReader::new(stdout);
    // The report is one pretty-printed JSON object: read until it parses.
    let started = Instant::now();
    let report: Value = loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).context("reading node output")?;
        if n == 0 {
            let _ = child.kill();
            let _ = child.wait();
            let mut logtext = String::new();
            let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut logtext));
            bail!("{name} exited during start-up:\n{logtext}");
        }
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            break v;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{name} did not report within a minute");
        }
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let listen = report["listen"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .context("node reported no listen address")?
        .to_string();
    Ok(NodeProc {
        role: role.to_string(),
        child,
        peer_id: field(&report, "peer_id")?,
        listen,
        http: field(&report, "http")?,
        netns: place.netns.clone(),
        spec: NodeSpec {
            dpow: dpow.to_path_buf(),
            dir: dir.to_path_buf(),
            name: name.to_string(),
            genesis: genesis.to_path_buf(),
            place: place.clone(),
            extra: extra.to_vec(),
        },
    })
}

/// `GET url` over plain HTTP/1.0, parsed as JSON.
pub fn http_get_json(url: &str) -> anyhow::Result<Value> {
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let json = body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("malformed HTTP response")?;
    serde_json::from_str(json).context("parsing /api/stats")
}

/// `POST url` with a JSON body over plain HTTP/1.0, parsed as JSON.
pub fn http_post_json(url: &str, body: &Value) -> anyhow::Result<Value> {
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let body = body.to_string();
    let mut s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "POST / HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let json = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("malformed HTTP response")?;
    serde_json::from_str(json).context("parsing the API's answer")
}

/// A node's `/api/events` stream (server-sent events), read as it comes: the node's events
/// as they happen and its statistics snapshot each second.
pub struct EventStream {
    reader: BufReader<TcpStream>,
}

impl EventStream {
    /// Open the stream of the node whose HTTP base URL is `http`. Once this returns, every
    /// event the node tells is on it.
    pub fn open(http: &str) -> anyhow::Result<EventStream> {
        let host = http
            .strip_prefix("http://")
            .context("http:// URL")?
            .trim_end_matches('/');
        let mut s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        // HTTP/1.0: the stream's body is the rest of the connection (no chunks to decode).
        write!(s, "GET /api/events HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status)?;
        if !status.contains(" 200 ") {
            bail!("{http}/api/events answered {}", status.trim());
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("{http}/api/events closed before its first event");
            }
            if line.trim().is_empty() {
                return Ok(EventStream { reader });
            }
        }
    }

    /// The next event's name (`None` for the unnamed statistics snapshot), waiting for it
    /// until `deadline`; `Ok(None)` as well when the deadline passes first.
    pub fn next_before(&mut self, deadline: Instant) -> anyhow::Result<Option<String>> {
        let mut name = None;
        let mut seen = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => bail!("the event stream closed"),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
            let line = line.trim_end();
            if line.is_empty() {
                if seen {
                    return Ok(name);
                }
                continue;
            }
            seen = true;
            if let Some(n) = line.strip_prefix("event:") {
                name = Some(n.trim().to_string());
            }
        }
    }
}

/// Wait until `ok` holds, looking again each time the node at `http` tells an event (and at
/// least at its statistics snapshot each second); fail after `timeout` naming `what`. For
/// conditions on another process's state: the stream is opened before the first look, so
/// nothing that happens between a look and the wait is missed.
pub fn wait_on(
    http: &str,
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut events = EventStream::open(http)?;
    while !ok() {
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        events.next_before(deadline)?;
    }
    Ok(())
}

/// Wait until `ok` holds, looking again each time any of `nodes` tells an event (and at
/// least at each one's statistics snapshot each second); fail after `timeout` naming `what`.
/// Each stream is opened before the first look. A node whose stream does not open (stopped,
/// or not yet serving) is not waited on; with none open this looks once a second.
pub fn wait_on_nodes(
    nodes: &[&NodeProc],
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    // One reader thread per stream; each tells of an event by a token in the channel, and
    // ends at the deadline, when its stream fails, or at the first event after the wait
    // is over (the receiver gone).
    let (tell, told) = std::sync::mpsc::sync_channel::<()>(1);
    let mut open = 0;
    for mut stream in nodes.iter().filter_map(|n| n.events().ok()) {
        open += 1;
        let tell = tell.clone();
        std::thread::spawn(move || {
            while stream.next_before(deadline).is_ok() {
                if Instant::now() >= deadline {
                    return;
                }
                if let Err(std::sync::mpsc::TrySendError::Disconnected(())) = tell.try_send(()) {
                    return;
                }
            }
        });
    }
    drop(tell);
    while !ok() {
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out waiting for {what}");
        }
        let left = deadline - now;
        let wait = if open == 0 {
            left.min(Duration::from_secs(1))
        } else {
            left
        };
        match told.recv_timeout(wait) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // Every stream failed (their nodes stopped): look once a second from now on.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                open = 0;
                std::thread::sleep(left.min(Duration::from_secs(1)));
            }
        }
    }
    Ok(())
}

/// Poll `ok` every 100 ms until it holds, or fail after `timeout` naming `what`: for
/// conditions no node tells (a process's exit, a file, a namespace's routes); a node's state
/// is waited for with [`wait_on`].
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() > timeout {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
