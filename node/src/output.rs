//! Command output: a human-readable form by default, JSON with `--json`.
//!
//! Results go to stdout; progress and errors go to stderr, so `--json` output can be piped.

use std::io::Write;

/// Where and how a command prints its results.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of text.
    pub json: bool,
}

impl Output {
    /// Print a result: `human` as text, or `json` pretty-printed.
    pub fn emit(&self, human: &str, json: &serde_json::Value) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, json)?;
            out.write_all(b"\n")?;
        } else {
            out.write_all(human.as_bytes())?;
            if !human.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
        out.flush()
    }

    /// A progress line on stderr (only in human mode, and only when stderr is a terminal or
    /// `force` is set), overwritten in place.
    pub fn progress(&self, line: &str) {
        use std::io::IsTerminal;
        let err = std::io::stderr();
        if self.json || !err.is_terminal() {
            return;
        }
        let mut err = err.lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    /// End a progress line.
    pub fn progress_done(&self) {
        use std::io::IsTerminal;
        let err = std::io::stderr();
        if !self.json && err.is_terminal() {
            let _ = write!(err.lock(), "\r\x1b[2K");
        }
    }
}

/// Format a rate in hashes per second with a unit ("38.2 MH/s").
pub fn rate(hps: f64) -> String {
    if hps >= 1e9 {
        format!("{:.2} GH/s", hps / 1e9)
    } else if hps >= 1e6 {
        format!("{:.1} MH/s", hps / 1e6)
    } else if hps >= 1e3 {
        format!("{:.1} kH/s", hps / 1e3)
    } else {
        format!("{hps:.0} H/s")
    }
}
