//! Notebooks under the evcxr kernel: a failing cell reported every time, through the cell's own
//! outputs rather than through a race.
//!
//! # Why evcxr alone loses errors
//!
//! evcxr 0.22 runs each cell in a child process and reads that child's stdout line by line until
//! the child prints `EVCXR_EXECUTION_COMPLETE`; it forwards the child's stderr from a separate
//! thread. A cell that uses `?` is wrapped in a closure whose error type prints the error with
//! `eprintln!` and then the line `EVCXR_ERROR_OCCURRED` on stdout (`error_trait_code` in evcxr's
//! `eval_context.rs`). evcxr only uses that line to forget the cell's new variables: the cell is
//! reported as *successful*, and its message reaches Jupyter from the stderr thread, which can lose
//! the race with the end of the cell (the message then lands on the next cell, or nowhere). With
//! the default `:preserve_vars_on_panic 1` a panic is caught the same way (`EVCXR_PANIC_NOTIFICATION`
//! on stdout, the message on stderr).
//!
//! # What [`report_failed_cells`] does
//!
//! It puts a relay between the child's standard streams and evcxr: stdout and stderr become two
//! pipes read by one relay thread. Stderr is passed on as it comes. When the relay reads
//! `EVCXR_ERROR_OCCURRED` or `EVCXR_PANIC_NOTIFICATION` on stdout, it first reads what is left in
//! the stderr pipe — the cell wrote its message there *before* the marker, from the same thread,
//! so the message is complete — and then emits a display output of MIME type [`ERROR_MIME`]
//! (with a `text/plain` twin for people) before passing the marker on. evcxr collects display
//! outputs synchronously and sends them before it answers the cell's `execute_request`, so the
//! failure is in the cell's own outputs every time. A cell that aborts, exits or fails to compile
//! needs no relay: evcxr reports those as cell errors itself.
//!
//! Every notebook calls it in its first cell; the notebook runner and the grader read
//! [`ERROR_MIME`] outputs. It is idempotent within a process (the child that evcxr restarts after a
//! crash starts without it, as it starts without any variable: run the notebook from the top).

use crate::error::{Error, Result};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// MIME type of the display output that marks a failed cell; its JSON is
/// `{"kind": "error" | "panic", "message": "..."}` (`message`: the cell's stderr text).
pub const ERROR_MIME: &str = "application/vnd.sgm.cell-error+json";

/// Set in the process's environment once the relay runs (each evcxr cell is its own shared
/// library with its own statics, so a static flag would not see an earlier cell's relay).
const INSTALLED_ENV: &str = "SGM_CELL_ERROR_RELAY";

/// What evcxr prints on stdout after a `?` error and after a caught panic.
const ERROR_MARKER: &[u8] = b"EVCXR_ERROR_OCCURRED";
const PANIC_MARKER: &[u8] = b"EVCXR_PANIC_NOTIFICATION";
/// What evcxr's runtime prints when a cell is done; the relay starts a new cell's capture there.
const COMPLETE_MARKER: &[u8] = b"EVCXR_EXECUTION_COMPLETE";

/// The most stderr text kept per cell for the failure message (the end of it).
const CAPTURE_LIMIT: usize = 16 * 1024;

fn os_error(what: &str) -> Error {
    Error::Io {
        path: format!("notebook relay ({what})"),
        source: std::io::Error::last_os_error(),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe"));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn dup(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor of this process returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(os_error("dup"));
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Whether the evcxr kernel can keep `value`, a cell's top-level variable `name` (at `line` of
/// the cell, from 1), for the cells after it: [`Error::NotKeepable`] where its type holds a
/// closure. evcxr stores each such variable under its type's name, and a closure's type has
/// none, so a value that holds one (a lazy iterator `v.iter().map(|x| x * 2)`, `Some(|x| x)`,
/// `Box::new(|x| x)` without a named type, an `async` block's future, which Rust also names
/// `{{closure}}`) fails the cell in the kernel, which then keeps none of its variables
/// ("The variable `it` has type `Map<Iter<'_, i32>, impl FnMut(&i32) -> i32>` which cannot be
/// persisted"). The notebook programs (`crate/notebook-programs`) call it after every `let` the
/// kernel would keep, so that they fail where the kernel would; the type is read with
/// [`std::any::type_name_of_val`], which spells a closure `{{closure}}`. An opaque type
/// without a closure inside (`impl Iterator` over a plain range) passes here and fails in the
/// kernel.
pub fn keepable<T: ?Sized>(value: &T, name: &str, line: usize) -> Result<()> {
    let ty = std::any::type_name_of_val(value);
    if ty.contains("{{closure}}") {
        return Err(Error::NotKeepable {
            name: name.into(),
            line,
            ty: ty.into(),
        });
    }
    Ok(())
}

/// Installs the relay described in the [module docs](self), once per process. Outside an evcxr
/// kernel it is harmless (stdout and stderr keep their destinations and contents).
pub fn report_failed_cells() -> Result<()> {
    if std::env::var_os(INSTALLED_ENV).is_some() {
        return Ok(());
    }
    let _ = std::io::stdout().flush();
    let real_out = dup(libc::STDOUT_FILENO)?;
    let real_err = dup(libc::STDERR_FILENO)?;
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    // SAFETY: the stderr pipe's read end is ours; O_NONBLOCK lets the relay empty it.
    unsafe {
        let flags = libc::fcntl(err_read.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(
            err_read.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_NONBLOCK,
        );
    }
    let relay = Relay {
        out_read,
        err_read,
        real_out: std::fs::File::from(real_out),
        real_err: std::fs::File::from(real_err),
        line: Vec::new(),
        captured: Vec::new(),
    };
    std::thread::Builder::new()
        .name("sgm-cell-error-relay".into())
        .spawn(move || relay.run())
        .map_err(|source| Error::Io {
            path: "notebook relay (thread)".into(),
            source,
        })?;
    // SAFETY: dup2 onto the standard descriptors; the pipes' write ends stay open in them.
    unsafe {
        if libc::dup2(out_write.as_raw_fd(), libc::STDOUT_FILENO) < 0
            || libc::dup2(err_write.as_raw_fd(), libc::STDERR_FILENO) < 0
        {
            return Err(os_error("dup2"));
        }
    }
    std::env::set_var(INSTALLED_ENV, "1");
    Ok(())
}

/// `read(2)` into `buf`: the bytes read, 0 at end of file, on an error or when a non-blocking
/// descriptor has nothing now.
fn read(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    // SAFETY: reading into our own buffer, within its length, from an open descriptor.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    n.max(0) as usize
}

struct Relay {
    out_read: OwnedFd,
    err_read: OwnedFd,
    real_out: std::fs::File,
    real_err: std::fs::File,
    /// The stdout line being assembled.
    line: Vec<u8>,
    /// This cell's stderr text (its end, at most [`CAPTURE_LIMIT`] bytes).
    captured: Vec<u8>,
}

impl Relay {
    fn run(mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.out_read.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.err_read.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` holds two valid pollfd records.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if fds[1].revents != 0 {
                self.drain_stderr();
            }
            if fds[0].revents != 0 {
                let n = read(&self.out_read, &mut buf);
                if n == 0 {
                    return;
                }
                for &byte in &buf[..n] {
                    self.line.push(byte);
                    if byte == b'\n' {
                        self.stdout_line();
                    }
                }
            }
        }
    }

    /// Reads everything the stderr pipe holds now, passes it on and keeps its end.
    fn drain_stderr(&mut self) {
        let mut buf = [0u8; 8192];
        loop {
            let n = read(&self.err_read, &mut buf);
            if n == 0 {
                return;
            }
            let chunk = &buf[..n];
            let _ = self.real_err.write_all(chunk);
            self.captured.extend_from_slice(chunk);
            if self.captured.len() > CAPTURE_LIMIT {
                self.captured.drain(..self.captured.len() - CAPTURE_LIMIT);
            }
        }
    }

    /// Passes one stdout line on; before a failure marker, the failure's display output.
    fn stdout_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let mut out = Vec::new();
        let bare = line.strip_suffix(b"\n").unwrap_or(&line);
        let kind = if bare == ERROR_MARKER {
            Some("error")
        } else if bare == PANIC_MARKER {
            Some("panic")
        } else {
            None
        };
        if let Some(kind) = kind {
            self.drain_stderr();
            let message = String::from_utf8_lossy(&self.captured).trim().to_string();
            out.extend_from_slice(&error_output(kind, &message));
        }
        out.extend_from_slice(&line);
        if bare == COMPLETE_MARKER {
            self.captured.clear();
        }
        let _ = self.real_out.write_all(&out);
    }
}

/// The display output evcxr reads for a failed cell: [`ERROR_MIME`] and `text/plain`.
fn error_output(kind: &str, message: &str) -> Vec<u8> {
    let json = serde_json::json!({ "kind": kind, "message": message }).to_string();
    // A line equal to evcxr's end marker would cut the text short.
    let text: String = message
        .lines()
        .filter(|l| !l.starts_with("EVCXR_"))
        .collect::<Vec<_>>()
        .join("\n");
    let headline = if kind == "panic" {
        "the cell panicked"
    } else {
        "the cell returned an error"
    };
    let text = if text.is_empty() {
        headline.to_string()
    } else {
        format!("{headline}:\n{text}")
    };
    format!(
        "EVCXR_BEGIN_CONTENT {ERROR_MIME}\n{json}\nEVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/plain\n{text}\nEVCXR_END_CONTENT\n"
    )
    .into_bytes()
}
