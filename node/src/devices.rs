//! Which devices solve: CPU threads and OpenCL GPUs, from the command line to a [`Dispatcher`].

use anyhow::{Context, bail};
use clap::Args;
use dpow_gpu::{DeviceSpec, GpuOptions};
use dpow_solver::Solver;
use dpow_solver::cpu::{Backend, CpuSolver};
use dpow_solver::dispatch::Dispatcher;
use serde::{Deserialize, Serialize};

/// Device flags shared by every command that solves. In `dpow node`'s config file they are
/// the keys `threads`, `backend`, `gpu` and `no_cpu`.
#[derive(Clone, Debug, Default, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceArgs {
    /// CPU threads (default 0 = every core).
    #[arg(long, env = "DPOW_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// CPU kernel: avx512, avx2 or portable (default: the fastest this CPU supports).
    #[arg(long, env = "DPOW_BACKEND", value_name = "NAME")]
    #[serde(with = "crate::config::text_opt")]
    pub backend: Option<Backend>,
    /// OpenCL device to solve on as well, `PLATFORM:DEVICE` from `dpow gpu list`, or `all`
    /// (every GPU; OpenCL CPU devices are left out while CPU threads run). Repeatable.
    #[arg(
        long = "gpu",
        env = "DPOW_GPU",
        value_delimiter = ',',
        value_name = "P:D|all"
    )]
    #[serde(rename = "gpu", with = "crate::config::text_vec")]
    pub gpus: Vec<DeviceSpec>,
    /// Solve on the GPUs only, no CPU threads (needs `--gpu`).
    #[arg(long, env = "DPOW_NO_CPU")]
    pub no_cpu: bool,
}

impl DeviceArgs {
    /// Open every selected device.
    pub fn open(&self) -> anyhow::Result<Vec<Box<dyn Solver>>> {
        let mut devices: Vec<Box<dyn Solver>> = Vec::new();
        if self.no_cpu && self.gpus.is_empty() {
            bail!("--no-cpu (no_cpu) leaves nothing to solve on: name a GPU with --gpu");
        }
        if !self.no_cpu {
            let threads = self.threads.unwrap_or(0);
            let cpu = match self.backend {
                Some(b) => CpuSolver::with_backend(threads, b),
                None => CpuSolver::new(threads),
            }
            .context("starting the CPU solver")?;
            devices.push(Box::new(cpu));
        }
        if !self.gpus.is_empty() {
            let mut specs = Vec::new();
            for &spec in &self.gpus {
                if spec == DeviceSpec::All {
                    // An OpenCL CPU device (PoCL) beside our own CPU threads only competes for
                    // the same cores; `all` means the GPUs unless the CPU threads are off.
                    let listed = dpow_gpu::list_devices().context("listing OpenCL devices")?;
                    specs.extend(
                        listed
                            .iter()
                            .filter(|d| self.no_cpu || d.kind != "cpu")
                            .map(|d| d.spec()),
                    );
                } else {
                    specs.push(spec);
                }
            }
            if specs.is_empty() && self.no_cpu {
                bail!("--gpu all found no OpenCL device to use (see `dpow gpu list`)");
            }
            let gpus = dpow_gpu::open_all(&specs, &GpuOptions::default())
                .context("opening OpenCL devices")?;
            for g in gpus {
                tracing::info!(device = %g.info(), "opened OpenCL device");
                devices.push(Box::new(g));
            }
        }
        if devices.is_empty() {
            bail!("no device selected to solve on");
        }
        Ok(devices)
    }

    /// Every selected device behind one dispatcher.
    pub fn dispatcher(&self) -> anyhow::Result<Dispatcher> {
        Ok(Dispatcher::new(self.open()?))
    }
}
