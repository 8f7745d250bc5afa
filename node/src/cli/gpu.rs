//! `dpow gpu list`: the OpenCL platforms and devices this machine has.

use std::process::ExitCode;

use clap::Subcommand;
use dpow_gpu::GpuError;
use serde_json::json;

use crate::output::Output;

/// `dpow gpu ...`
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// List OpenCL devices with the `PLATFORM:DEVICE` index that `--gpu` takes.
    List,
}

/// Run a `dpow gpu` command.
pub(super) fn run(cmd: GpuCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        GpuCommand::List => list(out),
    }
}

fn list(out: Output) -> anyhow::Result<ExitCode> {
    let devices = match dpow_gpu::list_devices() {
        Ok(d) => d,
        // No driver is a normal state of a machine, not a failure of this command: say what to
        // install and exit 0 with an empty list.
        Err(e @ (GpuError::NoPlatform(_) | GpuError::NoDevice(_) | GpuError::NotCompiled)) => {
            let json = json!({ "devices": [], "hint": e.to_string() });
            out.emit(&format!("no OpenCL devices.\n{e}"), &json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    let mut human = String::from("P:D  type  device\n");
    for d in &devices {
        human.push_str(&format!("{d}\n"));
    }
    human.push_str("use one with --gpu P:D, or every GPU with --gpu all");
    let rows: Vec<_> = devices
        .iter()
        .map(|d| {
            json!({
                "spec": d.spec().to_string(),
                "platform": d.platform_name,
                "name": d.name,
                "type": d.kind,
                "compute_units": d.compute_units,
                "max_work_group_size": d.max_work_group_size,
                "global_mem_bytes": d.global_mem_bytes,
                "long_vector_width": d.long_vector_width,
            })
        })
        .collect();
    out.emit(&human, &json!({ "devices": rows }))?;
    Ok(ExitCode::SUCCESS)
}
