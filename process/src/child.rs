//! Child processes of the command-line programs: `gpt2-bench compare --threads 1,2` runs one
//! child per thread count, and `gpt2-bench ab` runs the baseline and candidate binaries round
//! after round (whose own `--threads` sweeps are grandchildren). Every child is started through
//! [`run`], the one place that knows three things:
//!
//! - **Signals reach the whole tree.** A child started by a process that is not itself a
//!   managed child leads a new process group; a managed child (it finds [`CHILD_ENV`] set)
//!   keeps its own children in that group, so one `kill(-group)` reaches every descendant. The
//!   group (or, inside one, the child) is registered while it runs. On a terminating signal the
//!   handler (`crate::cli::install_signal_cleanup`) calls [`forward_signal`]: the same signal
//!   goes to every registered child, the handler waits (up to [`SIGNAL_GRACE`], then SIGKILL; a
//!   second signal skips the wait) until they have exited and removed their own temporary
//!   files, and only then removes this process's and exits. On Linux a child also gets SIGTERM
//!   when the process that started it dies without forwarding anything (SIGKILL, a crash), so
//!   a killed `ab` leaves no benchmark running.
//! - **No unbounded wait.** A child given a timeout that runs past it gets SIGTERM (it cleans up
//!   and stops its own children), its group SIGKILL after [`SIGNAL_GRACE`] and once more when it
//!   has exited (whatever it left behind), and [`run`] returns [`ChildError::TimedOut`]. Its
//!   output pipes are read for at most [`SIGNAL_GRACE`] after it exits, in case something it
//!   started elsewhere still holds them.
//! - **What happened is said.** A child that failed is described by its exit code or by the
//!   signal that ended it, named, and by its error line, or its panic message, when it printed
//!   one ([`ChildOutput::failure`]); never a message that ends in a colon with nothing after it.
//!
//! A pid is unregistered only under the registry's lock and before the child is reaped, so the
//! handler never signals a pid that the system may already have given to another process.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a child ended by a forwarded signal or by a timeout has to exit before it is killed.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(5);

/// Set in every managed child's environment: such a process keeps its own children in the
/// process group its parent made, instead of making new ones.
pub const CHILD_ENV: &str = "GPT2_BENCH_MANAGED_CHILD";

/// How often a running child is polled (its exit, the timeout, a signal).
const POLL: Duration = Duration::from_millis(20);

/// Process ids of the running children.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Set, under [`RUNNING`]'s lock, once a terminating signal arrived: no child is started after
/// it, and a thread whose child ended leaves the exit to the handler.
static EXITING: AtomicBool = AtomicBool::new(false);

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    // A panic while holding the lock leaves a list that is still valid.
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this process is a managed child: its children share its process group.
fn nested() -> bool {
    static NESTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NESTED.get_or_init(|| std::env::var_os(CHILD_ENV).is_some())
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
    /// ended (exit code, or the named signal and what usually sends it) and its error line.
    pub fn failure(&self) -> String {
        let how = describe_status(&self.status);
        match last_line(&self.stderr) {
            Some(line) => format!("{how}: {line}"),
            None => format!("{how}, with no error message of its own"),
        }
    }
}

/// What a child said went wrong, escaped for the terminal: its last `error: ` line (without the
/// prefix), else the message of a panic, else its last line that is not a `note:` (a panic's
/// "run with RUST_BACKTRACE=1" is no reason).
pub fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: ").map(str::to_string))
        .or_else(|| {
            // `thread 'main' panicked at src/x.rs:1:2:` then the message on the next line.
            let at = lines.iter().rposition(|l| l.contains("panicked at"))?;
            let message = lines.get(at + 1).filter(|l| !l.starts_with("note:"));
            Some(match message {
                Some(m) => format!("it panicked: {m}"),
                None => format!("it panicked: {}", lines[at]),
            })
        })
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| !l.starts_with("note:"))
                .map(|l| l.to_string())
        })?;
    Some(gpt2_weights::input::printable(&pick))
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

/// Keeps a child's pid on the registry until dropped (also when anything between its start
/// and its reaping unwinds).
struct Registered(u32);

impl Drop for Registered {
    fn drop(&mut self) {
        running().retain(|&p| p != self.0);
    }
}

/// Runs `command` to its end (standard input empty, output captured), within `timeout` when
/// given; see the module docs for signals and timeouts. Once a terminating signal has arrived
/// this never returns: the signal handler ends the process.
pub fn run(command: &mut Command, timeout: Option<Duration>) -> Result<ChildOutput, ChildError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(CHILD_ENV, "1");
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if !nested() {
            // A group of its own: a timeout or a signal ends the child and whatever it started.
            command.process_group(0);
        }
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: runs in the forked child before exec, where only async-signal-safe calls
        // are allowed: prctl, getppid and raise are. PR_SET_PDEATHSIG fires when the thread
        // that forked exits; children are started from threads that wait for them.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then nobody would send it.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    libc::raise(libc::SIGTERM);
                }
                Ok(())
            });
        }
    }
    let (mut child, _registered) = {
        let mut list = running();
        if EXITING.load(Ordering::Relaxed) {
            drop(list);
            wait_for_exit();
        }
        let child = command.spawn().map_err(ChildError::Spawn)?;
        list.push(child.id());
        let registered = Registered(child.id());
        (child, registered)
    };
    // Both pipes are drained while the child runs, so a chatty child never blocks on a full one.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait(&mut child, timeout);
    let (stdout, stderr) = (collect(stdout), collect(stderr));
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

/// Parks the calling thread for good: a signal handler is ending the process.
fn wait_for_exit() -> ! {
    loop {
        std::thread::park();
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<mpsc::Receiver<Vec<u8>>> {
    let mut pipe = pipe?;
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = send.send(bytes);
    });
    Some(receive)
}

/// What a pipe held: read to its end, or for [`SIGNAL_GRACE`] at most after the child exited
/// (a process it left behind in another group may hold the pipe open; its reader is abandoned).
fn collect(reader: Option<mpsc::Receiver<Vec<u8>>>) -> Vec<u8> {
    reader
        .and_then(|r| r.recv_timeout(SIGNAL_GRACE).ok())
        .unwrap_or_default()
}

/// Waits for the child: `Some(status)` when it exited, `None` when it ran past `timeout` (it has
/// then been stopped and reaped).
fn wait(child: &mut Child, timeout: Option<Duration>) -> Result<Option<ExitStatus>, ChildError> {
    let start = Instant::now();
    let mut stop_sent: Option<Instant> = None;
    loop {
        {
            let mut list = running();
            match exited(child) {
                Ok(true) => {
                    if stop_sent.is_some() {
                        // Whatever the stopped child left in its group goes too; its pid is
                        // not reaped yet, so the group is still its.
                        signal_group(child.id(), SIGKILL);
                    }
                    let status = child.wait().map_err(ChildError::Wait);
                    list.retain(|&p| p != child.id());
                    drop(list);
                    if EXITING.load(Ordering::Relaxed) {
                        // The signal handler is ending this process once every child is gone;
                        // reporting this child's end as a failure would race with it.
                        wait_for_exit();
                    }
                    let status = status?;
                    return Ok(if stop_sent.is_some() {
                        None
                    } else {
                        Some(status)
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    list.retain(|&p| p != child.id());
                    return Err(ChildError::Wait(e));
                }
            }
            let past_limit = timeout.is_some_and(|limit| start.elapsed() > limit);
            if past_limit && !EXITING.load(Ordering::Relaxed) {
                match stop_sent {
                    None => {
                        signal_group(child.id(), SIGTERM);
                        stop_sent = Some(Instant::now());
                    }
                    Some(at) if at.elapsed() > SIGNAL_GRACE => {
                        signal_group(child.id(), SIGKILL);
                    }
                    Some(_) => {}
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Whether the child has exited, without reaping it (so its pid, and its group's id, stay
/// reserved for signals until [`Child::wait`]).
fn exited(child: &mut Child) -> std::io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let pid = libc::id_t::from(child.id());
        // SAFETY: `info` is a zeroed, writable siginfo_t that waitid fills; WNOWAIT leaves the
        // child unreaped, WNOHANG makes the call return at once.
        let (result, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let result = libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            (result, info)
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: waitid filled `info`; si_pid is 0 when no child has exited (WNOHANG).
        Ok(unsafe { info.si_pid() } != 0)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // Reaps at once: the group sweep after a timeout then relies on the group outliving
        // its leader's pid (it does while any member is left).
        Ok(child.try_wait()?.is_some())
    }
}

#[cfg(unix)]
const SIGTERM: i32 = libc::SIGTERM;
#[cfg(unix)]
const SIGKILL: i32 = libc::SIGKILL;
#[cfg(not(unix))]
const SIGTERM: i32 = 15;
#[cfg(not(unix))]
const SIGKILL: i32 = 9;

/// Sends `signal` to the child `pid` and, when it leads a process group ([`run`] outside a
/// managed child), to everything in that group. The caller holds the registry's lock and the
/// child is not reaped, so the pid is still the child's.
fn signal_group(pid: u32, signal: i32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        let target = if nested() { pid } else { -pid };
        // SAFETY: kill(2) has no memory effects; `target` is an unreaped child or its group.
        unsafe {
            libc::kill(target, signal);
        }
    }
    #[cfg(not(unix))]
    let _ = (pid, signal);
}

/// For the signal handler: no child starts from now on, `signal` goes to every running child
/// (its process group), and this returns once they have all exited, or after [`SIGNAL_GRACE`]
/// and a SIGKILL, or at once with a SIGKILL when `another_signal` says a second signal came.
/// The threads that started the children reap them and then wait for the process to exit.
pub fn forward_signal(signal: i32, another_signal: &mut dyn FnMut() -> bool) {
    let any = {
        let list = running();
        EXITING.store(true, Ordering::Relaxed);
        for &pid in list.iter() {
            signal_group(pid, signal);
        }
        !list.is_empty()
    };
    if !any {
        return;
    }
    let start = Instant::now();
    let mut killed = false;
    loop {
        let list = running();
        if list.is_empty() {
            return;
        }
        let impatient = another_signal();
        if !killed && (impatient || start.elapsed() > SIGNAL_GRACE) {
            for &pid in list.iter() {
                signal_group(pid, SIGKILL);
            }
            killed = true;
        }
        if impatient || start.elapsed() > SIGNAL_GRACE * 2 {
            return;
        }
        drop(list);
        std::thread::sleep(POLL);
    }
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
    fn the_reason_is_the_error_line_or_the_panic_not_a_note() {
        let panic = b"thread 'main' (7) panicked at src/x.rs:1:2:\nindex out of bounds\nnote: run \
                      with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            last_line(panic).unwrap(),
            "it panicked: index out of bounds"
        );
        assert_eq!(
            last_line(b"warning: busy\nerror: no such file\nnote: x\n").unwrap(),
            "no such file"
        );
        assert_eq!(last_line(b"loading...\n").unwrap(), "loading...");
        assert_eq!(last_line(b"\n \n"), None);
    }

    #[test]
    fn a_child_past_its_timeout_is_stopped_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-alive");
        // The child starts a grandchild that ignores SIGTERM and would write the marker after
        // 6 s; the timeout stops the child (SIGTERM) and then sweeps its group (SIGKILL).
        let script = format!(
            "(trap '' TERM; sleep 6; touch {}) & echo started >&2; sleep 60",
            marker.display()
        );
        let start = Instant::now();
        let e = run(&mut sh(&script), Some(Duration::from_secs(1))).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{:?}",
            start.elapsed()
        );
        let text = e.to_string();
        assert!(
            text.contains("more than 1 s (the timeout)") && text.contains("started"),
            "{text}"
        );
        std::thread::sleep(Duration::from_millis(6500).saturating_sub(start.elapsed()));
        assert!(!marker.exists(), "the grandchild outlived the timeout");
    }
}
