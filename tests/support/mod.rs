//! Helpers shared by the integration tests.

use std::sync::{Mutex, MutexGuard};

/// libtorch has one global random generator per process and the test harness runs tests on
/// several threads: a test that seeds it and expects reproducible draws holds this lock.
pub fn rng_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh, empty folder `$TMPDIR/sgm-<name>-<pid>` for a test's files, removed when the test
/// passes (the guard drops outside a panic) and kept for inspection when it fails.
pub fn tmpdir(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("sgm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

/// The folder of [`tmpdir`]; derefs to its path.
#[derive(Debug)]
pub struct TmpDir(std::path::PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TmpDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The environment variable naming a folder of prebuilt workspace binaries: set, the tests run
/// `$SGM_TEST_BINS/<bin>` instead of building it (a GPU machine without cargo, where
/// `kernel-setup/gpu-check.sh` runs the bundle `kernel-setup/gpu-bundle.sh` made).
pub const TEST_BINS_ENV: &str = "SGM_TEST_BINS";

/// Builds binary `bin` of workspace package `package` with the tests' profile and returns its
/// path (`target/<profile>/<bin>`), or `$SGM_TEST_BINS/<bin>` when that is set. It builds the
/// whole workspace, all targets, as set-up's pre-build and `cargo test --workspace` do: with
/// resolver 2, `cargo build -p PACKAGE --bin BIN` selects other features for the shared
/// dependencies, so it compiled libc, syn, torch-sys, tch and the rest again (7.5 minutes of a
/// clean CI run), where this finds them built.
pub fn workspace_bin(package: &str, bin: &str) -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os(TEST_BINS_ENV) {
        let exe = std::path::PathBuf::from(dir).join(bin);
        assert!(exe.is_file(), "{TEST_BINS_ENV}: no {}", exe.display());
        return exe;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--workspace", "--all-targets"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the workspace (for {package}'s {bin}) failed"
    );
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<bin>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(bin)
}

/// Builds the `sgm` binary (package `sgm-cli`) once and returns its path.
pub fn sgm_bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| workspace_bin("sgm-cli", "sgm"))
}

/// The environment variable naming the device the library tests compute on.
pub const TEST_DEVICE_ENV: &str = "SGM_TEST_DEVICE";

/// The device the library tests compute on: `$SGM_TEST_DEVICE` (`cpu`, `cuda` or `cuda:N`,
/// parsed like `SGM_DEVICE`), the CPU when it is unset, so that CI (no GPU) is unchanged. A GPU
/// asked for and absent stops the test with the reason: never a silent CPU run.
///
/// On a GPU machine, `SGM_TEST_DEVICE=cuda cargo test` runs every statistical, shape and
/// error test there (the tests about device selection itself keep naming devices).
pub fn test_device() -> sgm::tch::Device {
    static DEVICE: std::sync::OnceLock<sgm::tch::Device> = std::sync::OnceLock::new();
    *DEVICE.get_or_init(|| {
        let Some(value) = std::env::var_os(TEST_DEVICE_ENV) else {
            return sgm::tch::Device::Cpu;
        };
        let value = value.to_string_lossy();
        let request = sgm::device::parse_device_request(&value)
            .unwrap_or_else(|e| panic!("{TEST_DEVICE_ENV}: {e}"));
        let (backend, gpus) = match request {
            sgm::device::DeviceRequest::Cpu => (sgm::device::CudaBackend::Absent, 0),
            sgm::device::DeviceRequest::Cuda(_) => (
                sgm::device::load_cuda_backend().clone(),
                usize::try_from(sgm::tch::Cuda::device_count()).unwrap_or(0),
            ),
        };
        let device = sgm::device::choose(Some(request), &backend, gpus)
            .unwrap_or_else(|e| panic!("{TEST_DEVICE_ENV}={value}: {e}"))
            .device;
        if device.is_cuda() {
            // The tests' tolerances are float32's: no TF32 rounding in cuDNN's convolutions.
            sgm::precision::set_cuda_conv_tf32(false)
                .unwrap_or_else(|e| panic!("{TEST_DEVICE_ENV}={value}: {e}"));
        }
        device
    })
}

/// `Tensor::from_slice` on [`test_device`]: the tests' hand-written constants live where the
/// tensors they meet do.
pub fn from_slice<T: sgm::tch::kind::Element>(values: &[T]) -> sgm::tch::Tensor {
    sgm::tch::Tensor::from_slice(values).to_device(test_device())
}

/// Two-dimensional distributions of the tests' own, for checking that the 2D pipeline's
/// defaults work on data they were not tuned for: each has a scale and a shape of its own
/// (thin curves, sharp edges, heavy arms), unlike the moons, the donut and the crate's mixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toy {
    /// Two interleaved spirals, 1.5 turns each, radius up to about 3 (FFJORD's "2spirals").
    Spirals,
    /// Eight unit squares of a 4 × 4 checkerboard on [−2, 2]² (FFJORD's "checkerboard").
    Checkerboard,
    /// Five curved arms, radial spread 0.3, tangential 0.1, out to about 4 (FFJORD's
    /// "pinwheel").
    Pinwheel,
}

impl Toy {
    /// Every toy distribution.
    pub const ALL: [Toy; 3] = [Toy::Spirals, Toy::Checkerboard, Toy::Pinwheel];

    /// `n` independent points `[n, 2]` (float32, CPU), from libtorch's generator (seed it
    /// first for reproducible draws).
    pub fn sample(self, n: i64) -> sgm::tch::Tensor {
        use sgm::tch::{Device, Kind, Tensor};
        let opts = (Kind::Float, Device::Cpu);
        let u = |k: i64| Tensor::rand([k], opts);
        let g = |k: i64| Tensor::randn([k], opts);
        match self {
            Toy::Spirals => {
                // Each point on either spiral (the second is the first turned by π).
                let side = Tensor::randint(2, [n, 1], (Kind::Int64, Device::Cpu)) * 2.0 - 1.0;
                let t = u(n).sqrt() * (3.0 * std::f64::consts::PI);
                let x = -(t.cos() * &t) + u(n) * 0.5;
                let y = t.sin() * &t + u(n) * 0.5;
                Tensor::stack(&[x, y], 1) * side / 3.0 + Tensor::randn([n, 2], opts) * 0.1
            }
            Toy::Checkerboard => {
                let x1 = u(n) * 4.0 - 2.0;
                let row = u(n) - Tensor::randint(2, [n], (Kind::Int64, Device::Cpu)) * 2.0;
                let x2 = row + x1.floor().remainder(2.0);
                Tensor::stack(&[x1, x2], 1)
            }
            Toy::Pinwheel => {
                let arms = 5;
                let arm = Tensor::randint(arms, [n], (Kind::Int64, Device::Cpu));
                let radial = g(n) * 0.3 + 1.0;
                let tangential = g(n) * 0.1;
                let angle = arm.to_kind(Kind::Float) * (2.0 * std::f64::consts::PI / arms as f64)
                    + radial.exp() * 0.25;
                let (c, s) = (angle.cos(), angle.sin());
                let x = &radial * &c - &tangential * &s;
                let y = &radial * &s + &tangential * &c;
                Tensor::stack(&[x, y], 1) * 2.0
            }
        }
    }
}

/// The parameters of a var store, detached copies sorted by name.
pub fn params(vs: &sgm::tch::nn::VarStore) -> Vec<(String, sgm::tch::Tensor)> {
    let mut v: Vec<_> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.detach().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The largest absolute difference between two sets of parameters of the same names.
pub fn max_abs_diff(a: &[(String, sgm::tch::Tensor)], b: &[(String, sgm::tch::Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((ka, ta), (kb, tb))| {
            assert_eq!(ka, kb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// Fixture submissions built from a homework's source by one edit per fault, and what their
/// reports say.
pub mod fixtures {
    use serde_json::Value;
    use sgm::assignment::{self, Report};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// `nb` with `from` replaced by `to` in the cell `id` (which must hold `from`).
    pub fn edit(nb: &mut Value, id: &str, from: &str, to: &str) {
        let cell = nb["cells"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no cell {id}"));
        let text = assignment::source_of(cell);
        assert!(text.contains(from), "cell {id} does not hold {from:?}");
        cell["source"] = Value::String(text.replacen(from, to, 1));
    }

    /// Writes `nb` as `dir/NAME.ipynb`; returns the path.
    pub fn write(dir: &Path, name: &str, nb: &Value) -> PathBuf {
        let path = dir.join(format!("{name}.ipynb"));
        assignment::write_notebook(&path, nb).unwrap();
        path
    }

    /// The report's points per task, in the assignment's order.
    pub fn points(report: &Report) -> Vec<(String, u32)> {
        report
            .tasks
            .iter()
            .map(|t| (t.id.clone(), t.points))
            .collect()
    }

    /// `pairs` in the form [`points`] returns.
    pub fn expect(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
        pairs.iter().map(|(id, p)| (id.to_string(), *p)).collect()
    }

    /// The report's message for `task`.
    pub fn message<'a>(report: &'a Report, task: &str) -> &'a str {
        &report.tasks.iter().find(|t| t.id == task).unwrap().message
    }

    /// `sgm grade --assignment ASSIGNMENT --out OUT` on the CPU; options and submissions follow.
    pub fn sgm_grade(assignment: &Path, out: &Path) -> Command {
        let mut command = Command::new(crate::sgm_bin());
        command
            .args(["grade", "--assignment"])
            .arg(assignment)
            .arg("--out")
            .arg(out)
            .env("SGM_DEVICE", "cpu");
        command
    }

    /// `sgm grade` of `submissions` against the source `assignment` into `out`, two at a time, on
    /// the CPU, at most 150 s a cell; asserts that it succeeded and returns its standard output.
    pub fn grade(assignment: &Path, out: &Path, submissions: &[PathBuf]) -> String {
        let output = sgm_grade(assignment, out)
            .args(["--jobs", "2", "--cell-timeout", "150"])
            .args(submissions)
            .output()
            .expect("sgm runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("{stdout}{stderr}");
        assert!(output.status.success(), "sgm grade failed: {stderr}");
        stdout
    }

    /// Asserts a report's points per task (`expected`, in the assignment's order), its total and
    /// maximum, and that exactly the tasks in `pending` await grading by hand.
    pub fn assert_graded(
        report: &Report,
        expected: &[(&str, u32)],
        total: (u32, u32),
        pending: &[&str],
    ) {
        assert_eq!(points(report), expect(expected), "{report:#?}");
        assert_eq!((report.total, report.max), total, "{}", report.submission);
        for t in &report.tasks {
            assert_eq!(
                t.pending,
                pending.contains(&t.id.as_str()),
                "{}: {}",
                report.submission,
                t.id
            );
        }
    }

    /// Task `id`'s summary on the last line `sgm grade` printed (`stdout`): submissions graded,
    /// pending, with full marks, and the mean points.
    pub fn summary(stdout: &str, id: &str) -> (Value, Value, Value, Value) {
        let last: Value = serde_json::from_str(stdout.trim_end().lines().last().unwrap()).unwrap();
        let t = &last["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap();
        (
            t["graded"].clone(),
            t["pending"].clone(),
            t["full"].clone(),
            t["mean"].clone(),
        )
    }

    /// The report `sgm grade --out OUT` wrote for the submission `name`.
    pub fn report(out: &Path, name: &str) -> Report {
        let text = std::fs::read_to_string(out.join(name).join("report.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}
