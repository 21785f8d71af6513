//! Child processes of the command-line programs: `gpt2-bench compare --threads 1,2` runs one
//! child per thread count, and `gpt2-bench ab` runs the baseline and candidate binaries round
//! after round. Every child is started through [`run`], the one place that knows three things:
//!
//! - **Signals reach the children.** Each child runs in a process group of its own (so a
//!   timeout can end it and everything it started), and its group is registered while it runs.
//!   On a terminating signal the handler (`crate::cli::install_signal_cleanup`) calls
//!   [`forward_signal`]: the same signal goes to every registered group, the handler waits (up to
//!   [`SIGNAL_GRACE`], then SIGKILL) until the children have exited and cleaned up their own
//!   temporary files, and only then removes this process's and exits. Without it, `compare
//!   --threads 1,2` or `ab` ended by Ctrl-C would exit and leave a child running on the machine.
//! - **No unbounded wait.** A child given a timeout that runs past it gets SIGTERM (it cleans up
//!   and forwards it to its own children), then SIGKILL after [`SIGNAL_GRACE`], and [`run`]
//!   returns [`ChildError::TimedOut`].
//! - **What happened is said.** A child that failed is described by its exit code or by the
//!   signal that ended it, named, and by its last error line when it printed one
//!   ([`ChildOutput::failure`]); never a message that ends in a colon with nothing after it.
//!
//! A pid is unregistered only under the registry's lock and before its zombie is reaped, so the
//! handler never signals a pid that the system may already have given to another process.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a child ended by a forwarded signal or by a timeout has to exit before it is killed.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(5);

/// How often a running child is polled (its exit, the timeout, a signal).
const POLL: Duration = Duration::from_millis(20);

/// Process ids of the running children (each the leader of its own process group).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Set, under [`RUNNING`]'s lock, once a terminating signal arrived: no child is started after
/// it, and a thread whose child ended leaves the exit to the handler.
static EXITING: AtomicBool = AtomicBool::new(false);

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    // A panic while holding the lock leaves a list that is still valid.
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a child could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("could not start it: {0}")]
    Spawn(std::io::Error),
    #[error(
        "it ran for more than {limit_s} s (the timeout) and was stopped{}",
        last_line_suffix(.stderr)
    )]
    TimedOut { limit_s: f64, stderr: Vec<u8> },
    #[error("the process is exiting after a signal")]
    Exiting,
    #[error("waiting for it failed: {0}")]
    Wait(std::io::Error),
}

/// What a child that ran to its end left.
#[derive(Debug)]
pub struct ChildOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ChildOutput {
    /// What went wrong, as the end of a sentence ("the run ... failed: {this}"): how the child
    /// ended (exit code, or the named signal and what usually sends it) and its last error line.
    pub fn failure(&self) -> String {
        let how = describe_status(&self.status);
        match last_line(&self.stderr) {
            Some(line) => format!("{how}: {line}"),
            None => format!("{how}, with no error message of its own"),
        }
    }
}

/// The last non-empty line a child wrote on stderr (its one-line error), without the `error: `
/// prefix, escaped for the terminal.
pub fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let last = text.lines().rfind(|l| !l.trim().is_empty())?;
    Some(gpt2_weights::input::printable(
        last.trim().trim_start_matches("error: "),
    ))
}

fn last_line_suffix(stderr: &[u8]) -> String {
    last_line(stderr).map_or(String::new(), |l| format!("; its last line was: {l}"))
}

/// `exit status 3`, or `killed by signal 9 (SIGKILL: ...)` with what usually sends it.
pub fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let what = match signal {
                libc::SIGKILL => {
                    "SIGKILL: another program, or the kernel's out-of-memory killer, ended it"
                }
                libc::SIGSEGV => "SIGSEGV: it crashed",
                libc::SIGBUS => "SIGBUS: a mapped file changed under it, or it crashed",
                libc::SIGABRT => "SIGABRT: it aborted",
                libc::SIGILL => "SIGILL: an instruction this CPU lacks",
                libc::SIGTERM => "SIGTERM: another program asked it to stop",
                libc::SIGINT => "SIGINT: interrupted",
                libc::SIGHUP => "SIGHUP: its terminal went away",
                _ => "",
            };
            return if what.is_empty() {
                format!("killed by signal {signal}")
            } else {
                format!("killed by signal {signal} ({what})")
            };
        }
    }
    format!("ended without an exit code ({status})")
}

/// Runs `command` to its end (standard input empty, output captured), within `timeout` when
/// given; see the module docs for signals and timeouts.
pub fn run(command: &mut Command, timeout: Option<Duration>) -> Result<ChildOutput, ChildError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own group: a timeout ends the child and whatever it started; a terminal's Ctrl-C
        // reaches it through [`forward_signal`], after this process has seen it.
        command.process_group(0);
    }
    let mut child = {
        let mut list = running();
        if EXITING.load(Ordering::Relaxed) {
            return Err(ChildError::Exiting);
        }
        let child = command.spawn().map_err(ChildError::Spawn)?;
        list.push(child.id());
        child
    };
    // Both pipes are drained while the child runs, so a chatty child never blocks on a full one.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait(&mut child, timeout);
    let (stdout, stderr) = (join(stdout), join(stderr));
    match status? {
        Some(status) => Ok(ChildOutput {
            status,
            stdout,
            stderr,
        }),
        None => Err(ChildError::TimedOut {
            limit_s: timeout.map_or(0.0, |t| t.as_secs_f64()),
            stderr,
        }),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    let mut pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    }))
}

fn join(reader: Option<std::thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader.and_then(|r| r.join().ok()).unwrap_or_default()
}

/// Waits for the child: `Some(status)` when it exited, `None` when it ran past `timeout` (it has
/// then been stopped and reaped).
fn wait(child: &mut Child, timeout: Option<Duration>) -> Result<Option<ExitStatus>, ChildError> {
    let start = Instant::now();
    let mut stop_sent: Option<Instant> = None;
    loop {
        {
            let mut list = running();
            // Reaped under the lock, and unregistered in the same breath: the handler never
            // sees a pid that is no longer this child's.
            match child.try_wait() {
                Ok(Some(status)) => {
                    list.retain(|&p| p != child.id());
                    drop(list);
                    if EXITING.load(Ordering::Relaxed) {
                        // The signal handler is ending this process once every child is gone;
                        // reporting this child's end as a failure would race with it.
                        loop {
                            std::thread::park();
                        }
                    }
                    return Ok(if stop_sent.is_some() && timeout.is_some() {
                        None
                    } else {
                        Some(status)
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    list.retain(|&p| p != child.id());
                    return Err(ChildError::Wait(e));
                }
            }
            let past_limit = timeout.is_some_and(|limit| start.elapsed() > limit);
            if past_limit && !EXITING.load(Ordering::Relaxed) {
                match stop_sent {
                    None => {
                        signal_group(child, Stop::Ask);
                        stop_sent = Some(Instant::now());
                    }
                    Some(at) if at.elapsed() > SIGNAL_GRACE => signal_group(child, Stop::Kill),
                    Some(_) => {}
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

enum Stop {
    /// SIGTERM: the child removes its temporary files and stops its own children.
    Ask,
    Kill,
}

/// Sends a stop to the child's process group (the caller holds the registry's lock and has not
/// reaped the child, so the group is still the child's).
fn signal_group(child: &mut Child, stop: Stop) {
    #[cfg(unix)]
    {
        let signal = match stop {
            Stop::Ask => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) has no memory effects; the group is this unreaped child's.
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = stop;
        let _ = child.kill();
    }
}

/// For the signal handler: no child starts from now on, `signal` goes to every running child's
/// process group, and this returns once they have all exited (or after [`SIGNAL_GRACE`] and a
/// SIGKILL). The threads that started them reap them and then wait for the process to exit.
pub fn forward_signal(signal: i32) {
    let signalled: Vec<u32> = {
        let list = running();
        EXITING.store(true, Ordering::Relaxed);
        for &pid in list.iter() {
            send(pid, signal);
        }
        list.clone()
    };
    if signalled.is_empty() {
        return;
    }
    let start = Instant::now();
    let mut killed = false;
    loop {
        let list = running();
        if list.is_empty() {
            return;
        }
        if !killed && start.elapsed() > SIGNAL_GRACE {
            #[cfg(unix)]
            for &pid in list.iter() {
                send(pid, libc::SIGKILL);
            }
            killed = true;
        }
        if start.elapsed() > SIGNAL_GRACE * 2 {
            return;
        }
        drop(list);
        std::thread::sleep(POLL);
    }
}

fn send(pid: u32, signal: i32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; `pid` leads an unreaped child's group (the
        // caller holds the registry's lock, under which children are reaped).
        unsafe {
            libc::kill(-pid, signal);
        }
    }
    #[cfg(not(unix))]
    let _ = (pid, signal);
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_and_status_come_back() {
        let out = run(
            &mut sh("echo out; echo 'error: it broke' >&2; exit 3"),
            None,
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.failure(), "exit status 3: it broke");
    }

    #[test]
    fn a_killed_child_is_described_not_left_hanging_on_a_colon() {
        let out = run(&mut sh("kill -9 $$"), None).unwrap();
        let failure = out.failure();
        assert!(
            failure.starts_with("killed by signal 9 (SIGKILL: another program")
                && failure.ends_with("with no error message of its own"),
            "{failure}"
        );
    }

    #[test]
    fn a_child_past_its_timeout_is_stopped_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-alive");
        // The child starts a grandchild that would write the marker after 3 s; the timeout ends
        // the whole group first.
        let script = format!(
            "(sleep 3; touch {}) & echo started >&2; sleep 60",
            marker.display()
        );
        let start = Instant::now();
        let e = run(&mut sh(&script), Some(Duration::from_millis(300))).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        let text = e.to_string();
        assert!(
            text.contains("more than 0.3 s (the timeout)") && text.contains("started"),
            "{text}"
        );
        std::thread::sleep(Duration::from_millis(3500));
        assert!(!marker.exists(), "the grandchild outlived the timeout");
        assert!(running().is_empty());
    }
}
