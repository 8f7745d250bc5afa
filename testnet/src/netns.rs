//! Hosts in Linux network namespaces: a small internet for the testnet.
//!
//! A [`Topology`] makes, as root, a public segment (a bridge in a "hub" namespace with a host
//! per public node, each on its own address in 10.0.0.0/24) and two home segments, each behind
//! a router namespace that masquerades its LAN (192.168.1.0/24, 192.168.2.0/24) to its address
//! on the public segment and drops every new connection from outside: a real NAT. Public hosts
//! have no default route, so nothing can leave the topology. Every name starts with
//! `dp<pid>-<n>-`, so parallel runs never collide and a sweep can tell stale namespaces (whose
//! process is gone) from live ones. Dropping the topology kills every process inside it and
//! deletes its namespaces (and with them their links).
//!
//! [`in_ns`] runs a closure on a thread that has entered a namespace: the harness reaches a
//! node's HTTP on `127.0.0.1` inside that namespace that way.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// The environment variable that turns a skipped namespace test into a failure (CI sets it).
pub const REQUIRE_ENV: &str = "DPOW_REQUIRE_NETNS";
/// The libp2p port every host's node listens on (fixed, so a restarted node keeps its address).
pub const PORT: u16 = 4001;

/// Every host's node serves HTTP here, on its own loopback (a restarted node keeps its URL).
pub const HTTP: &str = "127.0.0.1:7076";

/// Where a host sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// The public segment: reachable by every host.
    Public,
    /// Home 1 or 2: behind its router's NAT.
    Home(u8),
}

/// One host: a namespace with one address.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its name in the topology (`bootstrap`, `service`, `relay`, `worker1`, ...).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its segment.
    pub segment: Segment,
    /// The switch side of its cable: (namespace, interface).
    cable: (String, String),
}

impl Host {
    /// Its libp2p listen addresses: TCP, and QUIC on the same port when `quic`.
    pub fn listen(&self, quic: bool) -> Vec<String> {
        let mut v = vec![format!("/ip4/{}/tcp/{PORT}", self.ip)];
        if quic {
            v.push(format!("/ip4/{}/udp/{PORT}/quic-v1", self.ip));
        }
        v
    }
}

/// A link a partition can cut.
#[derive(Clone, Copy, Debug)]
pub enum Link<'a> {
    /// A host's cable to its segment's switch.
    Host(&'a str),
    /// A home router's cable to the public segment: the whole home goes dark.
    Home(u8),
}

/// The shape of a topology.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Workers on the public segment.
    pub public_workers: usize,
    /// Workers at home, split across the two homes (the first in home 1).
    pub home_workers: usize,
}

/// Namespaces, links and NAT routers, removed when dropped.
pub struct Topology {
    prefix: String,
    hub: String,
    namespaces: Vec<String>,
    /// Every host, in creation order.
    pub hosts: Vec<Host>,
    home_hosts: [u8; 2],
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn own_prefix() -> String {
    format!("dp{}-", std::process::id())
}

/// Run `ip ARGS`; its standard error becomes the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The nftables rules of a home router: masquerade out of `wan`; new connections from
/// outside, to the LAN or to the router itself, are dropped without an answer, as home
/// routers do. (Answering them with a reset, Linux's default for a closed port on the router,
/// kills a hole punch: a peer's SYN that reaches the router a moment before this side's own
/// SYN has opened the mapping is refused, and the simultaneous open fails at once.)
const NAT_RULES: &str = "table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" masquerade
  }
}
table ip filter {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname \"wan\" ct state new drop
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname \"wan\" ct state new drop
  }
}
";

impl Topology {
    /// Build the topology: bootstrap (10.0.0.2), service (.3) and relay (.4) on the public
    /// segment with `public_workers` workers from .10, two home routers (.101, .102), and
    /// `home_workers` workers alternating between the homes (192.168.H.10 up). Stale
    /// namespaces of runs whose process is gone are swept first.
    pub fn new(layout: Layout) -> anyhow::Result<Topology> {
        sweep_stale();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{}{n}-", own_prefix());
        let mut t = Topology {
            hub: format!("{prefix}hub"),
            prefix,
            namespaces: Vec::new(),
            hosts: Vec::new(),
            home_hosts: [0; 2],
        };
        t.build(layout)?;
        Ok(t)
    }

    fn add_ns(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = format!("{}{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    fn build(&mut self, layout: Layout) -> anyhow::Result<()> {
        let hub = self.add_ns("hub")?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "dev", "br0", "up"])?;
        for (i, name) in ["bootstrap", "service", "relay"].iter().enumerate() {
            self.add_public(name, Ipv4Addr::new(10, 0, 0, 2 + i as u8))?;
        }
        for i in 0..layout.public_workers {
            let ip = Ipv4Addr::new(10, 0, 0, 10 + i as u8);
            self.add_public(&format!("pworker{}", i + 1), ip)?;
        }
        for h in [1u8, 2] {
            self.add_router(h)?;
        }
        for i in 0..layout.home_workers {
            self.add_home_host(1 + (i % 2) as u8, &format!("worker{}", i + 1))?;
        }
        Ok(())
    }

    /// A veth from a new host namespace's `eth0` to `switch_ns`, its other end `port` on
    /// `bridge`, the host addressed `ip/24`.
    fn cable(
        &self,
        host_ns: &str,
        switch_ns: &str,
        port: &str,
        bridge: &str,
        ip_addr: Ipv4Addr,
    ) -> anyhow::Result<()> {
        let cidr = format!("{ip_addr}/24");
        ip(&[
            "-n", host_ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
            switch_ns,
        ])?;
        ip(&[
            "-n", switch_ns, "link", "set", "dev", port, "master", bridge, "up",
        ])?;
        ip(&["-n", host_ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", host_ns, "link", "set", "dev", "eth0", "up"])
    }

    fn add_public(&mut self, name: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        let ns = self.add_ns(name)?;
        let port = format!("p{}", addr.octets()[3]);
        let hub = self.hub.clone();
        self.cable(&ns, &hub, &port, "br0", addr)?;
        self.hosts.push(Host {
            name: name.to_string(),
            ns,
            ip: addr,
            segment: Segment::Public,
            cable: (hub, port),
        });
        Ok(())
    }

    fn router_ns(&self, home: u8) -> String {
        format!("{}router{home}", self.prefix)
    }

    fn add_router(&mut self, home: u8) -> anyhow::Result<()> {
        let ns = self.add_ns(&format!("router{home}"))?;
        let wan = format!("{}/24", Ipv4Addr::new(10, 0, 0, 100 + home));
        let hub = self.hub.clone();
        let port = format!("wan{home}");
        ip(&[
            "-n", &ns, "link", "add", "wan", "type", "veth", "peer", "name", &port, "netns", &hub,
        ])?;
        ip(&[
            "-n", &hub, "link", "set", "dev", &port, "master", "br0", "up",
        ])?;
        ip(&["-n", &ns, "addr", "add", &wan, "dev", "wan"])?;
        ip(&["-n", &ns, "link", "set", "dev", "wan", "up"])?;
        let lan = format!("{}/24", Ipv4Addr::new(192, 168, home, 1));
        ip(&["-n", &ns, "link", "add", "lan", "type", "bridge"])?;
        ip(&["-n", &ns, "addr", "add", &lan, "dev", "lan"])?;
        ip(&["-n", &ns, "link", "set", "dev", "lan", "up"])?;
        let sysctl = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .context("running sysctl")?;
        if !sysctl.success() {
            bail!("enabling forwarding in {ns} failed");
        }
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (install nftables)")?;
        nft.stdin
            .take()
            .context("nft stdin")?
            .write_all(NAT_RULES.as_bytes())?;
        let out = nft.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {ns} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Add a host named `name` to home `home` (1 or 2), behind its router.
    pub fn add_home_host(&mut self, home: u8, name: &str) -> anyhow::Result<&Host> {
        let idx = match home {
            1 | 2 => usize::from(home - 1),
            _ => bail!("there are homes 1 and 2, not {home}"),
        };
        let k = self.home_hosts[idx];
        self.home_hosts[idx] += 1;
        let ns = self.add_ns(name)?;
        let router = self.router_ns(home);
        let port = format!("h{k}");
        let addr = Ipv4Addr::new(192, 168, home, 10 + k);
        self.cable(&ns, &router, &port, "lan", addr)?;
        let gw = Ipv4Addr::new(192, 168, home, 1).to_string();
        ip(&["-n", &ns, "route", "add", "default", "via", &gw])?;
        self.hosts.push(Host {
            name: name.to_string(),
            ns,
            ip: addr,
            segment: Segment::Home(home),
            cable: (router, port),
        });
        self.hosts.last().context("just added")
    }

    /// The hosts, one line each: name, segment, address.
    pub fn describe(&self) -> String {
        let mut out = String::from("hosts (network namespaces):");
        for h in &self.hosts {
            let seg = match h.segment {
                Segment::Public => "public".to_string(),
                Segment::Home(n) => format!("home {n} behind NAT 10.0.0.{}", 100 + n),
            };
            out.push_str(&format!("\n  {:<10} {:<14} {seg}", h.name, h.ip));
        }
        out
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> anyhow::Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name} in the topology"))
    }

    fn link(&self, link: Link<'_>) -> anyhow::Result<(String, String)> {
        match link {
            Link::Host(name) => Ok(self.host(name)?.cable.clone()),
            Link::Home(h @ (1 | 2)) => Ok((self.hub.clone(), format!("wan{h}"))),
            Link::Home(h) => bail!("there are homes 1 and 2, not {h}"),
        }
    }

    /// Cut a link (at the switch end, as a pulled cable: the far end sees its carrier go).
    pub fn link_down(&self, link: Link<'_>) -> anyhow::Result<()> {
        let (ns, dev) = self.link(link)?;
        ip(&["-n", &ns, "link", "set", "dev", &dev, "down"])
    }

    /// Restore a link cut by [`Topology::link_down`].
    pub fn link_up(&self, link: Link<'_>) -> anyhow::Result<()> {
        let (ns, dev) = self.link(link)?;
        ip(&["-n", &ns, "link", "set", "dev", &dev, "up"])
    }
}

impl Drop for Topology {
    /// Kill what runs inside and delete every namespace, the last made first.
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            tear_down(ns);
        }
    }
}

/// The processes in namespace `ns` (zombies, which have left it, not counted).
fn pids_in(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kill every process in namespace `ns`, then delete it.
fn tear_down(ns: &str) {
    let t0 = std::time::Instant::now();
    loop {
        let pids = pids_in(ns);
        if pids.is_empty() || t0.elapsed() > std::time::Duration::from_secs(3) {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // Until the kernel has taken them out of the namespace.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if let Err(e) = ip(&["netns", "del", ns]) {
        tracing::warn!("removing namespace {ns}: {e:#}");
    }
}

/// Names in `/run/netns`.
fn namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Delete namespaces of earlier runs (`dp<pid>-...`) whose process is gone.
pub fn sweep_stale() {
    for ns in namespaces() {
        let Some(pid) = ns
            .strip_prefix("dp")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tear_down(&ns);
        }
    }
}

/// Delete every namespace this process made (for a signal handler: no handle is dropped).
pub fn tear_down_own() {
    let prefix = own_prefix();
    let mut mine: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    // Hosts before their hub and routers, as Drop does.
    mine.sort_by_key(|n| n.ends_with("hub") || n.contains("router"));
    for ns in mine {
        tear_down(&ns);
    }
}

/// On SIGINT or SIGTERM, delete this process's namespaces (killing every node in them) and
/// exit with status 130.
pub fn tear_down_on_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the signal handler")?;
    std::thread::Builder::new()
        .name("netns-signals".into())
        .spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                tear_down_own();
                std::process::exit(130);
            });
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Whether this `dpow` listens on QUIC (its `node --help` names it), so hosts add a QUIC
/// address beside TCP.
pub fn supports_quic(dpow: &std::path::Path) -> bool {
    Command::new(dpow)
        .args(["node", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("quic"))
}

/// The `dpow node` options every node on these hosts gets: `--lan` where the binary has it, so
/// AutoNAT counts peers on the topology's private addresses (10.0.0.0/24 stands for the
/// internet here) when it judges reachability.
pub fn node_flags(dpow: &std::path::Path) -> Vec<String> {
    let has = Command::new(dpow)
        .args(["node", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--lan"));
    if has {
        vec!["--lan".into()]
    } else {
        Vec::new()
    }
}

/// Whether namespaces, veths and nftables work here; the reason when not. Checked once.
pub fn available() -> Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err("network namespaces need root".into());
            }
            let probe = format!(
                "{}probe{}",
                own_prefix(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            ip(&["netns", "add", &probe]).map_err(|e| format!("{e:#}"))?;
            let veth = ip(&[
                "-n", &probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
            ]);
            let nft = Command::new("ip")
                .args(["netns", "exec", &probe, "nft", "list", "ruleset"])
                .output();
            tear_down(&probe);
            veth.map_err(|e| format!("{e:#}"))?;
            match nft {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(format!(
                    "nft failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Err(format!("nft not found (install nftables): {e}")),
            }
        })
        .clone()
}

/// Run `f` on a fresh thread that has entered network namespace `ns` (so `127.0.0.1` is that
/// namespace's loopback), and return what it returns.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns takes a file descriptor we hold open and a flag; it changes only
            // this thread's network namespace, and the thread ends when `f` returns.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if r != 0 {
                bail!("entering {ns}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread in {ns} panicked"))?
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn home_hosts_reach_the_public_segment_and_not_the_reverse() {
        if let Err(why) = available() {
            assert!(
                !std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1"),
                "{REQUIRE_ENV}=1 but namespaces are unavailable: {why}"
            );
            return;
        }
        let t = Topology::new(Layout {
            public_workers: 0,
            home_workers: 2,
        })
        .unwrap();
        let boot = t.host("bootstrap").unwrap().clone();
        let w1 = t.host("worker1").unwrap().clone();
        let listener = in_ns(&boot.ns, || std::net::TcpListener::bind((boot.ip, 0)))
            .unwrap()
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let out = in_ns(&w1.ns, || std::net::TcpStream::connect((boot.ip, port))).unwrap();
        assert!(out.is_ok(), "a home host dials out: {out:?}");
        let (_conn, from) = listener.accept().unwrap();
        assert_eq!(
            from.ip(),
            std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101))
        );
        let back = in_ns(&boot.ns, || std::net::TcpStream::connect((w1.ip, 9))).unwrap();
        assert!(back.is_err(), "nothing outside reaches a home host");
        // The router drops a connection to itself unanswered (no reset), as home routers do.
        let router = in_ns(&boot.ns, || {
            std::net::TcpStream::connect_timeout(
                &(Ipv4Addr::new(10, 0, 0, 101), 4001).into(),
                std::time::Duration::from_millis(300),
            )
        })
        .unwrap();
        assert_eq!(
            router.map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut),
            "the router answered an unsolicited connection"
        );
        t.link_down(Link::Home(1)).unwrap();
        let cut = in_ns(&w1.ns, || {
            std::net::TcpStream::connect_timeout(
                &(boot.ip, port).into(),
                std::time::Duration::from_millis(500),
            )
        })
        .unwrap();
        assert!(cut.is_err(), "a cut home reaches nothing");
        t.link_up(Link::Home(1)).unwrap();
        let names = t.namespaces.clone();
        drop(t);
        let left = namespaces();
        assert!(names.iter().all(|n| !left.contains(n)), "all removed");
    }
}
