//! `dpow ledger pay` as a process against a stand-in Nano wallet RPC ([`NanoRpc`]): a dry run,
//! a full pay, insufficient balance then a re-run, a locked wallet, an answer that comes too
//! late, `kill -9` halfway (before and after the node applied the send), and bad inputs. In
//! every case each account is debited at most once, and once a run succeeds, exactly once,
//! for the report's total.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dpow_keys::{NanoAccount, SecretKey, encode_account};
use dpow_protocol::ledger::{CheckpointRef, PayoutReport, report_signing_input};
use dpow_testnet::nano_rpc::{Hold, NanoRpc};
use dpow_testnet::procs::dpow_binary;
use serde_json::Value;

/// How long any one wait may take.
const T: Duration = Duration::from_secs(60);
const EPOCH: u64 = 20_422;
const NETWORK: &str = "paytest";
/// 1 Nano in raw.
const POOL: u128 = 1_000_000_000_000_000_000_000_000_000_000;

/// A genesis, a signed report, a stand-in node with a funded wallet, and a journal directory.
struct Setup {
    dir: tempfile::TempDir,
    genesis: PathBuf,
    registrar: SecretKey,
    report: PathBuf,
    signature: PathBuf,
    /// The report's lines: account and raw, in the report's order.
    lines: Vec<(String, u128)>,
    rpc: NanoRpc,
    wallet: String,
    source: String,
    journal: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A report of epoch `EPOCH` over `earned`, signed by `signer`, written to `dir/name.csv` and
/// `dir/name.sig`.
fn write_report(
    dir: &Path,
    name: &str,
    earned: &BTreeMap<NanoAccount, u128>,
    pool: u128,
    signer: &SecretKey,
) -> (PathBuf, PathBuf, PayoutReport) {
    // Computed against the signer's checkpoint of the epoch, as `ledger payout` does.
    let report = PayoutReport::new(EPOCH, earned, pool)
        .expect("a report")
        .with_checkpoint(CheckpointRef {
            registrar: signer.public(),
            digest: [0x5c; 32],
            receipts: earned.len() as u64,
        });
    write_csv(dir, name, &report.to_csv(), signer);
    let (csv_path, sig_path) = (
        dir.join(format!("{name}.csv")),
        dir.join(format!("{name}.sig")),
    );
    (csv_path, sig_path, report)
}

/// The network id of the genesis written in `dir` (a report's signature names it).
fn net_of(dir: &Path) -> dpow_protocol::NetworkId {
    dpow_node::genesis::Genesis::load(&dir.join("genesis.toml"))
        .expect("genesis")
        .id
}

/// Write `csv` and `signer`'s signature over it (for the network of `dir`'s genesis) as
/// `dir/name.csv` and `dir/name.sig`.
fn write_csv(dir: &Path, name: &str, csv: &str, signer: &SecretKey) {
    let sig = signer.sign(&report_signing_input(csv, &net_of(dir)));
    std::fs::write(dir.join(format!("{name}.csv")), csv).expect("write csv");
    std::fs::write(
        dir.join(format!("{name}.sig")),
        format!("{}\n", hex(&sig.0)),
    )
    .expect("write sig");
}

fn workers(n: u8) -> BTreeMap<NanoAccount, u128> {
    (1..=n)
        .map(|i| {
            (
                dpow_keys::wallet::account_from_seed(&[0x77; 32], u32::from(i))
                    .expect("an account"),
                3 + 2 * u128::from(i),
            )
        })
        .collect()
}

impl Setup {
    /// Five workers, the source funded with `balance` raw.
    fn new(balance: u128) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let registrar = SecretKey::from_seed([0xEE; 32]);
        let genesis = dir.path().join("genesis.toml");
        std::fs::write(
            &genesis,
            format!(
                "network = \"{NETWORK}\"\nprofile = \"test\"\nregistrars = [\"{}\"]\nbootstrap = []\n",
                registrar.public()
            ),
        )
        .expect("write genesis");
        let (report, signature, r) =
            write_report(dir.path(), "report", &workers(5), POOL, &registrar);
        let lines = r
            .lines()
            .iter()
            .map(|l| (l.address.to_string(), l.raw))
            .collect();
        let rpc = NanoRpc::start().expect("stand-in RPC");
        let source = encode_account(&[0xAA; 32]);
        let wallet = rpc.add_wallet(&[(&source, balance)]);
        let journal = dir.path().join("journal");
        Setup {
            dir,
            genesis,
            registrar,
            report,
            signature,
            lines,
            rpc,
            wallet,
            source,
            journal,
        }
    }

    /// `dpow --json ledger pay` with the signed report, the stand-in and the journal, then
    /// `extra`.
    fn command(&self, extra: &[&str]) -> Command {
        let mut c = self.text_command();
        c.arg("--json").args(extra);
        c
    }

    /// `dpow ledger pay` as [`Setup::command`], printing the table.
    fn text_command(&self) -> Command {
        let mut c = Command::new(dpow_binary().expect("dpow binary"));
        c.arg("ledger")
            .arg("--genesis")
            .arg(&self.genesis)
            .arg("pay")
            .arg("--report")
            .arg(&self.report)
            .arg("--signature")
            .arg(&self.signature)
            .args(["--registrar", &self.registrar.public().to_string()])
            .args(["--rpc", &self.rpc.url(), "--wallet", &self.wallet])
            .args(["--source", &self.source])
            .arg("--journal")
            .arg(&self.journal)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn pay(&self, extra: &[&str]) -> Run {
        Run::of(self.command(extra).output().expect("dpow runs"))
    }

    fn total(&self) -> u128 {
        self.lines.iter().map(|(_, r)| r).sum()
    }

    /// Each line's account debited exactly once, for its amount, and nothing else.
    fn assert_paid_exactly_once(&self) {
        let debits = self.rpc.debits();
        assert_eq!(debits.len(), self.lines.len(), "{debits:?}");
        for (account, raw) in &self.lines {
            let to: Vec<_> = debits
                .iter()
                .filter(|d| &d.destination == account)
                .collect();
            assert_eq!(to.len(), 1, "{account} paid {} times", to.len());
            assert_eq!(to[0].amount, *raw);
            assert_eq!(to[0].source, self.source);
        }
        assert_eq!(debits.iter().map(|d| d.amount).sum::<u128>(), POOL);
        assert_eq!(self.total(), POOL);
    }

    /// The block the stand-in made for `account`.
    fn block_to(&self, account: &str) -> String {
        self.rpc
            .debits()
            .into_iter()
            .find(|d| d.destination == account)
            .map(|d| d.block)
            .expect("a debit to the account")
    }
}

/// A finished `dpow ledger pay`.
struct Run {
    code: Option<i32>,
    json: Value,
    stderr: String,
}

impl Run {
    fn of(out: Output) -> Run {
        Run {
            code: out.status.code(),
            json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The status of each line, in order.
    fn statuses(&self) -> Vec<String> {
        self.lines()
            .iter()
            .map(|l| l["status"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn lines(&self) -> Vec<Value> {
        self.json["lines"].as_array().cloned().unwrap_or_default()
    }

    fn refused_with(&self, text: &str) {
        assert_eq!(self.code, Some(2), "stderr: {}", self.stderr);
        assert!(
            self.stderr.contains(text),
            "{text:?} not in: {}",
            self.stderr
        );
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_dry_run_sends_nothing_and_needs_no_rpc() {
    let s = Setup::new(POOL);
    let out = Command::new(dpow_binary().expect("dpow"))
        .arg("--json")
        .args(["ledger", "--genesis"])
        .arg(&s.genesis)
        .args(["pay", "--dry-run", "--report"])
        .arg(&s.report)
        .arg("--signature")
        .arg(&s.signature)
        .args(["--registrar", &s.registrar.public().to_string()])
        .args(["--source", &s.source, "--journal"])
        .arg(&s.journal)
        .output()
        .expect("dpow runs");
    let run = Run::of(out);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.json["dry_run"], true);
    assert_eq!(run.statuses(), vec!["would send"; 5]);
    for (line, (account, raw)) in run.lines().iter().zip(&s.lines) {
        assert_eq!(line["account"], account.as_str());
        assert_eq!(line["raw"], raw.to_string().as_str());
        assert_eq!(
            line["id"],
            format!("dpow-{NETWORK}-{EPOCH}-{account}").as_str()
        );
    }
    assert_eq!(s.rpc.send_calls(), 0);
    assert!(!s.journal.exists(), "a dry run writes no journal");
}

#[test]
fn a_full_pay_sends_each_line_once_and_prints_its_block() {
    let s = Setup::new(POOL + 5);
    let run = s.pay(&[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.statuses(), vec!["sent"; 5]);
    s.assert_paid_exactly_once();
    for line in run.lines() {
        let account = line["account"].as_str().expect("account");
        assert_eq!(line["block"], s.block_to(account).as_str());
    }
    assert_eq!(run.json["paid_raw"], POOL.to_string().as_str());
    assert_eq!(s.rpc.balance(&s.wallet, &s.source), 5);
    // Again: every line is already sent, per the journal; the node is not even asked.
    let calls = s.rpc.send_calls();
    let again = s.pay(&[]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.statuses(), vec!["already sent"; 5]);
    assert_eq!(again.lines(), {
        let mut l = run.lines();
        for x in &mut l {
            x["status"] = "already sent".into();
        }
        l
    });
    assert_eq!(s.rpc.send_calls(), calls);
    s.assert_paid_exactly_once();
    // The table names each line's block too.
    let table = s.text_command().output().expect("dpow runs");
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    for (account, _) in &s.lines {
        let row = table
            .lines()
            .find(|l| l.starts_with(account.as_str()))
            .expect("a row");
        assert!(
            row.contains("already sent") && row.contains(&s.block_to(account)),
            "{row}"
        );
    }
}

#[test]
fn insufficient_balance_then_a_rerun_after_topping_up_pays_the_rest_once() {
    let s = Setup::new(0);
    let first_two: u128 = s.lines[..2].iter().map(|(_, r)| r).sum();
    s.rpc.top_up(&s.wallet, &s.source, first_two);
    let run = s.pay(&[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        run.statuses(),
        strs(&["sent", "sent", "not paid", "not paid", "not paid"])
    );
    for line in &run.lines()[2..] {
        assert!(
            line["error"]
                .as_str()
                .expect("error")
                .contains("Insufficient balance")
        );
    }
    assert!(
        run.stderr.contains("3 of 5 lines not paid"),
        "{}",
        run.stderr
    );
    assert_eq!(s.rpc.debits().len(), 2);
    s.rpc.top_up(&s.wallet, &s.source, POOL - first_two);
    let rerun = s.pay(&[]);
    assert_eq!(rerun.code, Some(0), "{}", rerun.stderr);
    assert_eq!(
        rerun.statuses(),
        strs(&["already sent", "already sent", "sent", "sent", "sent"])
    );
    s.assert_paid_exactly_once();
    assert_eq!(s.rpc.balance(&s.wallet, &s.source), 0);
}

#[test]
fn a_locked_wallet_pays_nothing_until_it_is_unlocked() {
    let s = Setup::new(POOL);
    s.rpc.set_locked(&s.wallet, true);
    let run = s.pay(&[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.statuses(), vec!["not paid"; 5]);
    for line in run.lines() {
        assert!(
            line["error"]
                .as_str()
                .expect("error")
                .contains("Wallet is locked")
        );
    }
    assert!(s.rpc.debits().is_empty());
    s.rpc.set_locked(&s.wallet, false);
    let rerun = s.pay(&[]);
    assert_eq!(rerun.code, Some(0), "{}", rerun.stderr);
    assert_eq!(rerun.statuses(), vec!["sent"; 5]);
    s.assert_paid_exactly_once();
}

#[test]
fn an_answer_too_late_is_finished_by_a_rerun_without_paying_twice() {
    let s = Setup::new(POOL);
    let late = s.lines[1].0.clone();
    // The node applies the send, then answers long after the client stopped waiting.
    s.rpc.delay_answer_to(&late, Duration::from_secs(600));
    let run = s.pay(&["--timeout", "1"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        run.statuses(),
        strs(&["sent", "not paid", "sent", "sent", "sent"])
    );
    let err = run.lines()[1]["error"].as_str().expect("error").to_string();
    assert!(err.contains("no answer within"), "{err}");
    // The money moved although the client does not know it.
    assert_eq!(s.rpc.debits().len(), 5);
    let rerun = s.pay(&[]);
    assert_eq!(rerun.code, Some(0), "{}", rerun.stderr);
    assert_eq!(
        rerun.statuses(),
        strs(&[
            "already sent",
            "sent",
            "already sent",
            "already sent",
            "already sent"
        ])
    );
    // The same id: the node's first block, and no second debit.
    assert_eq!(rerun.lines()[1]["block"], s.block_to(&late).as_str());
    s.assert_paid_exactly_once();
}

/// Start a pay, let the stand-in park the 3rd send at `hold`, `kill -9` the process there,
/// then re-run: the unpaid lines are paid, the paid ones not again.
fn killed_halfway(hold: Hold) {
    let s = Setup::new(POOL);
    s.rpc.hold_send(3, hold);
    let mut child = s.command(&[]).spawn().expect("dpow starts");
    assert!(s.rpc.wait_held(T), "the 3rd send never arrived");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    assert_eq!(status.code(), None, "killed by a signal");
    let applied = if hold == Hold::AfterApply { 3 } else { 2 };
    assert_eq!(s.rpc.debits().len(), applied);
    let rerun = s.pay(&[]);
    assert_eq!(rerun.code, Some(0), "{}", rerun.stderr);
    assert_eq!(
        rerun.statuses(),
        strs(&["already sent", "already sent", "sent", "sent", "sent"])
    );
    let third = &s.lines[2].0;
    assert_eq!(rerun.lines()[2]["block"], s.block_to(third).as_str());
    s.assert_paid_exactly_once();
    assert_eq!(s.rpc.balance(&s.wallet, &s.source), 0);
}

#[test]
fn kill_9_after_the_node_applied_a_send_pays_nothing_twice() {
    killed_halfway(Hold::AfterApply);
}

#[test]
fn kill_9_before_the_node_saw_a_send_skips_nothing() {
    killed_halfway(Hold::BeforeApply);
}

#[test]
fn bad_inputs_are_refused_with_clear_errors_and_nothing_is_sent() {
    let s = Setup::new(POOL);
    let dir = s.dir.path();
    let good = s.source.clone();
    let mut broken = good.clone().into_bytes();
    broken[20] = if broken[20] == b'3' { b'4' } else { b'3' };
    let broken = String::from_utf8(broken).expect("ascii");
    let burn = encode_account(&[0; 32]);
    let with_source = |src: &str| {
        let mut c = Command::new(dpow_binary().expect("dpow"));
        c.arg("--json")
            .args(["ledger", "--genesis"])
            .arg(&s.genesis)
            .args(["pay", "--report"])
            .arg(&s.report)
            .arg("--signature")
            .arg(&s.signature)
            .args(["--registrar", &s.registrar.public().to_string()])
            .args([
                "--rpc",
                &s.rpc.url(),
                "--wallet",
                &s.wallet,
                "--source",
                src,
            ])
            .arg("--journal")
            .arg(&s.journal);
        Run::of(c.output().expect("dpow runs"))
    };
    with_source(&broken).refused_with("checksum");
    with_source(&burn).refused_with("burn account");

    // A report paying the burn account, or an account whose checksum fails, properly signed.
    // (No report type holds the burn account, so its CSV is edited, then signed.)
    let (_, _, two) = write_report(dir, "two", &workers(2), POOL, &s.registrar);
    let first = two.lines()[0].address.to_string();
    let burn = two.to_csv().replace(&first, &encode_account(&[0; 32]));
    write_csv(dir, "burn", &burn, &s.registrar);
    let (burn_csv, burn_sig) = (dir.join("burn.csv"), dir.join("burn.sig"));
    let report_run = |csv: &Path, sig: &Path, registrar: &str| {
        let mut c = Command::new(dpow_binary().expect("dpow"));
        c.arg("--json")
            .args(["ledger", "--genesis"])
            .arg(&s.genesis)
            .args(["pay", "--report"])
            .arg(csv)
            .arg("--signature")
            .arg(sig)
            .args(["--registrar", registrar])
            .args([
                "--rpc",
                &s.rpc.url(),
                "--wallet",
                &s.wallet,
                "--source",
                &good,
            ])
            .arg("--journal")
            .arg(&s.journal);
        Run::of(c.output().expect("dpow runs"))
    };
    let registrar = s.registrar.public().to_string();
    report_run(&burn_csv, &burn_sig, &registrar).refused_with("burn account");
    let csv = std::fs::read_to_string(&s.report).expect("csv");
    let (victim, _) = &s.lines[0];
    let mut typo = victim.clone().into_bytes();
    typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    let bad_csv = dir.join("typo.csv");
    std::fs::write(&bad_csv, csv.replace(victim.as_str(), &typo)).expect("write");
    let bad_sig = dir.join("typo.sig");
    let sig = s.registrar.sign(&report_signing_input(
        &csv.replace(victim.as_str(), &typo),
        &net_of(dir),
    ));
    std::fs::write(&bad_sig, hex(&sig.0)).expect("write");
    report_run(&bad_csv, &bad_sig, &registrar).refused_with("checksum");

    // A registrar the genesis does not list, and a genesis registrar that did not sign.
    let outsider = SecretKey::from_seed([0x55; 32]);
    let (o_csv, o_sig, _) = write_report(dir, "outsider", &workers(5), POOL, &outsider);
    report_run(&o_csv, &o_sig, &outsider.public().to_string())
        .refused_with("is not a registrar of this network");
    report_run(&o_csv, &o_sig, &registrar).refused_with("bad signature");

    // A signed report that names no checkpoint: refused unless --no-checkpoint says so
    // (checked on a dry run, which sends nothing either way).
    let bare = PayoutReport::new(EPOCH, &workers(5), POOL).expect("a report");
    write_csv(dir, "bare", &bare.to_csv(), &s.registrar);
    let (bare_csv, bare_sig) = (dir.join("bare.csv"), dir.join("bare.sig"));
    report_run(&bare_csv, &bare_sig, &registrar).refused_with("names no registrar checkpoint");
    let mut c = Command::new(dpow_binary().expect("dpow"));
    c.args(["ledger", "--genesis"])
        .arg(&s.genesis)
        .args(["pay", "--dry-run", "--no-checkpoint", "--report"])
        .arg(&bare_csv)
        .arg("--signature")
        .arg(&bare_sig)
        .args(["--registrar", &registrar, "--source", &good]);
    let run = Run::of(c.output().expect("dpow runs"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // Unsigned: refused unless --unsigned says so.
    let mut c = Command::new(dpow_binary().expect("dpow"));
    c.arg("--json")
        .args(["ledger", "--genesis"])
        .arg(&s.genesis)
        .args(["pay", "--report"])
        .arg(&s.report)
        .args([
            "--rpc",
            &s.rpc.url(),
            "--wallet",
            &s.wallet,
            "--source",
            &good,
        ])
        .arg("--journal")
        .arg(&s.journal);
    let unsigned = Run::of(c.output().expect("dpow runs"));
    unsigned.refused_with("is not signed");
    assert!(
        unsigned.stderr.contains("--unsigned"),
        "{}",
        unsigned.stderr
    );
    assert_eq!(s.rpc.send_calls(), 0, "nothing was sent");
    c.arg("--unsigned");
    let run = Run::of(c.output().expect("dpow runs"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    s.assert_paid_exactly_once();

    // The same epoch again with other amounts: the journal refuses the changed report.
    let (changed_csv, changed_sig, _) =
        write_report(dir, "changed", &workers(5), POOL * 2, &s.registrar);
    let calls = s.rpc.send_calls();
    report_run(&changed_csv, &changed_sig, &registrar)
        .refused_with("the report changed since paying began");
    assert_eq!(s.rpc.send_calls(), calls);
    s.assert_paid_exactly_once();
}
