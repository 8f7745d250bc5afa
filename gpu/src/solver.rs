//! The OpenCL solver: one device, its compiled kernel, and the launch loop.
//!
//! [`GpuSolver::new`] builds the kernel once (PoCL compiles with LLVM, which takes seconds) and
//! keeps it. A job clears the found flag, then launches the kernel over consecutive nonce ranges
//! sized by the [`launch`](crate::launch) planner, reading the flag back after each launch (that
//! read is also the wait), checking for cancellation between launches and counting hashes into
//! the job's [`Control`]. An answer is re-validated on the CPU before it is returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use dpow_protocol::{Difficulty, Root, Work};
use dpow_solver::{Control, SolveError, Solver, random_start, revalidate};
use ocl::{Buffer, Context, Kernel, Program, Queue};

use crate::device::{Resolved, resolve};
use crate::launch::{ITEM_QUANTUM, LaunchPlanner};
use crate::{DeviceInfo, DeviceSpec, Fault, GpuError, GpuOptions, KERNEL_SOURCE};

/// Kernel argument positions (see `kernel.cl`).
const ARG_START: u32 = 0;
const ARG_COUNT: u32 = 1;
const ARG_ROOT: u32 = 3;
const ARG_THRESHOLD: u32 = 7;

/// An OpenCL device running the Nano work kernel.
///
/// One job at a time: concurrent [`Solver::solve`] calls on the same value queue behind a lock.
/// Open one `GpuSolver` per device and let a `dpow_solver::dispatch::Dispatcher` spread jobs.
#[derive(Debug)]
pub struct GpuSolver {
    info: DeviceInfo,
    name: String,
    /// The last launch's rate as `f64` bits, readable while a job holds `state`.
    rate_bits: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    queue: Queue,
    kernel: Kernel,
    found: Buffer<u32>,
    result: Buffer<u64>,
    planner: LaunchPlanner,
    /// Work-group size: fixed, because PoCL compiles the kernel again for every new one.
    local_size: usize,
}

impl GpuSolver {
    /// Open one device (`P:D`) with default options and build the kernel for it.
    pub fn new(spec: DeviceSpec) -> Result<GpuSolver, GpuError> {
        Self::with_options(spec, GpuOptions::default())
    }

    /// Open one device (`P:D`) with `options` and build the kernel for it.
    pub fn with_options(spec: DeviceSpec, options: GpuOptions) -> Result<GpuSolver, GpuError> {
        if spec == DeviceSpec::All {
            return Err(GpuError::NotOneDevice);
        }
        let resolved = resolve(spec)?
            .into_iter()
            .next()
            .ok_or_else(|| GpuError::NoDevice(format!("{spec} resolved to nothing")))?;
        Self::open(resolved, &options)
    }

    fn open(r: Resolved, options: &GpuOptions) -> Result<GpuSolver, GpuError> {
        if options.per_item == 0 {
            return Err(GpuError::Config("per_item must be at least 1".to_string()));
        }
        let lanes = match options.lanes {
            Some(n) if [1, 2, 4, 8, 16].contains(&n) => n,
            Some(n) => {
                return Err(GpuError::Config(format!(
                    "lanes must be 1, 2, 4, 8 or 16, not {n}"
                )));
            }
            // A width the kernel does not know (3, or 0 on odd drivers) falls back to the next
            // power of two down.
            None => 1 << r.info.long_vector_width.clamp(1, 16).ilog2(),
        };
        let name = format!("opencl {} {}", r.info.spec(), r.info.name);
        let err = |e: ocl::Error| GpuError::OpenCl {
            device: name.clone(),
            reason: e.to_string(),
        };
        let context = Context::builder()
            .platform(r.platform)
            .devices(r.device)
            .build()
            .map_err(err)?;
        let queue = Queue::new(&context, r.device, None).map_err(err)?;
        let mut builder = Program::builder();
        builder
            .src(KERNEL_SOURCE)
            .devices(r.device)
            .cmplr_opt(format!("-D LANES={lanes}"));
        if let Some(Fault::IgnoreThreshold) = options.fault {
            builder.cmplr_opt("-D DPOW_FAULT_IGNORE_THRESHOLD");
        }
        let program = builder.build(&context).map_err(|e| GpuError::Build {
            device: name.clone(),
            log: e.to_string(),
        })?;
        let found = Buffer::<u32>::builder()
            .queue(queue.clone())
            .len(1)
            .fill_val(0)
            .build()
            .map_err(err)?;
        let result = Buffer::<u64>::builder()
            .queue(queue.clone())
            .len(1)
            .fill_val(0)
            .build()
            .map_err(err)?;
        let kernel = Kernel::builder()
            .program(&program)
            .name("nano_work")
            .queue(queue.clone())
            .global_work_size(1)
            .arg(0u64) // start
            .arg(0u64) // count
            .arg(options.per_item)
            .arg(0u64) // root words
            .arg(0u64)
            .arg(0u64)
            .arg(0u64)
            .arg(u64::MAX) // threshold
            .arg(&found)
            .arg(&result)
            .build()
            .map_err(err)?;
        let per_item = options.per_item.checked_mul(lanes).ok_or_else(|| {
            GpuError::Config(format!("per_item {} is too large", options.per_item))
        })?;
        let planner = LaunchPlanner::new(
            per_item,
            r.info.compute_units,
            options.max_launch,
            options.fixed_launch,
        );
        // The largest power of two up to ITEM_QUANTUM that the device accepts: it divides every
        // launch's work-item count.
        let max_wg = r.info.max_work_group_size.clamp(1, ITEM_QUANTUM as usize);
        let local_size = 1usize << max_wg.ilog2();
        tracing::debug!(device = %name, per_item = options.per_item, lanes, "opencl device ready");
        Ok(GpuSolver {
            info: r.info,
            name,
            rate_bits: AtomicU64::new(0f64.to_bits()),
            state: Mutex::new(State {
                queue,
                kernel,
                found,
                result,
                planner,
                local_size,
            }),
        })
    }

    /// The device this solver runs on.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The hash rate measured on the last launch, in hashes per second (0 before any). Does
    /// not wait for a running job.
    pub fn measured_rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    /// Like [`Solver::solve`], but search upwards from nonce `start` (wrapping) instead of a
    /// random one.
    pub fn solve_from(
        &self,
        root: &Root,
        difficulty: Difficulty,
        start: u64,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        self.search(root, difficulty, start, None, control)
    }

    /// Search exactly the `count` nonces `start, start + 1, …` (wrapping); `Ok(None)` if none
    /// of them meets `difficulty` or the job is cancelled first.
    ///
    /// Which of several valid nonces in one launch is returned is not specified.
    pub fn search_range(
        &self,
        root: &Root,
        difficulty: Difficulty,
        start: u64,
        count: u64,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        self.search(root, difficulty, start, Some(count), control)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is reset at the start of every job, so a panic mid-job leaves nothing stale.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn search(
        &self,
        root: &Root,
        difficulty: Difficulty,
        start: u64,
        count: Option<u64>,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        let mut st = self.lock();
        let st = &mut *st;
        let err = |e: ocl::Error| SolveError::Device {
            device: self.name.clone(),
            reason: e.to_string(),
        };
        st.found.write(&[0u32][..]).enq().map_err(err)?;
        for (i, w) in root.words().into_iter().enumerate() {
            st.kernel.set_arg(ARG_ROOT + i as u32, w).map_err(err)?;
        }
        st.kernel
            .set_arg(ARG_THRESHOLD, difficulty.0)
            .map_err(err)?;

        let mut next = start;
        let mut remaining = count.unwrap_or(u64::MAX);
        loop {
            if control.is_cancelled() || remaining == 0 {
                return Ok(None);
            }
            let hashes = st.planner.next(difficulty, remaining);
            let items = usize::try_from(st.planner.items(hashes))
                .map_err(|_| SolveError::Config(format!("launch of {hashes} hashes is too big")))?;
            st.kernel.set_arg(ARG_START, next).map_err(err)?;
            st.kernel.set_arg(ARG_COUNT, hashes).map_err(err)?;
            let began = Instant::now();
            // SAFETY: the kernel writes only `found[0]` and `result[0]`, and both buffers, of
            // length 1, are owned by `st` for the whole launch; the read below waits for it.
            unsafe {
                st.kernel
                    .cmd()
                    .global_work_size(items)
                    .local_work_size(st.local_size)
                    .enq()
            }
            .map_err(err)?;
            let mut flag = [0u32];
            st.found.read(&mut flag[..]).enq().map_err(err)?;
            st.planner.record(hashes, began.elapsed());
            self.rate_bits
                .store(st.planner.rate_hps().to_bits(), Ordering::Relaxed);
            control.add_hashes(hashes);
            if flag[0] != 0 {
                let mut nonce = [0u64];
                st.result.read(&mut nonce[..]).enq().map_err(err)?;
                return revalidate(&self.name, root, difficulty, Work(nonce[0])).map(Some);
            }
            next = next.wrapping_add(hashes);
            if count.is_some() {
                remaining -= hashes;
            }
        }
    }

    /// Wait for everything queued on the device (used when tearing down in tests and benches).
    pub fn finish(&self) -> Result<(), SolveError> {
        self.lock().queue.finish().map_err(|e| SolveError::Device {
            device: self.name.clone(),
            reason: e.to_string(),
        })
    }
}

impl Solver for GpuSolver {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn solve(
        &self,
        root: &Root,
        difficulty: Difficulty,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        self.solve_from(root, difficulty, random_start(), control)
    }
}

/// Open every device the specs name (`all` expands; a device named twice is opened once).
///
/// Fails on the first device that cannot be opened, naming it.
pub fn open_all(specs: &[DeviceSpec], options: &GpuOptions) -> Result<Vec<GpuSolver>, GpuError> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for &spec in specs {
        for r in resolve(spec)? {
            let key = r.info.spec();
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            out.push(GpuSolver::open(r, options)?);
        }
    }
    Ok(out)
}
