//! Test harness for the jlayers tools: every test runs in a private mount namespace
//! of its own, with its own temp dir, and drives the real binaries.
//!
//! The namespace belongs to a fresh thread (unshare(CLONE_NEWNS) acts on the calling
//! thread), so tests run in parallel and children inherit the thread's view. Nothing
//! mounted here is visible to the host; the namespace dies with the thread.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod userland;
pub use userland::{M, SIMULATED, UNION_FSTYPE};

/// Define each scenario `fn name(Backend)` as a test per backend the host has:
/// on Linux `linux::name` and `freebsd_sim::name` (the FreeBSD backend against the
/// simulated userland), on FreeBSD `freebsd::name` (against the base system).
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        #[cfg(target_os = "linux")]
        mod linux {
            $(#[test] fn $name() { super::$name($crate::Backend::Linux) })*
        }
        #[cfg(target_os = "linux")]
        mod freebsd_sim {
            $(#[test] fn $name() { super::$name($crate::Backend::FreeBsd) })*
        }
        #[cfg(target_os = "freebsd")]
        mod freebsd {
            $(#[test] fn $name() { super::$name($crate::Backend::FreeBsd) })*
        }
    };
}

/// Which backend the tools run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Linux,
    /// `JLAYERS_PLATFORM=freebsd`: on a Linux host with the simulated userland first
    /// on PATH, on a FreeBSD host with the base system ([`userland`]).
    FreeBsd,
}

pub struct Sandbox {
    /// The test's temp dir; everything it makes lives below.
    pub dir: PathBuf,
    pub backend: Backend,
}

/// Run `body` in a new thread with a temp dir on a tmpfs of its own, on Linux in
/// a private mount namespace ([`userland`]). Fails (never skips) when what the
/// host must give cannot be had.
pub fn sandbox(backend: Backend, body: impl FnOnce(&Sandbox) + Send) {
    // Held to the end (FreeBSD: one test at a time).
    let _claim = userland::claim();
    let tmp = tempfile::Builder::new()
        .prefix("jlayers-test.")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path().canonicalize().unwrap();
    userland::prepare(&dir);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            userland::enter_thread(&dir);
            let sb = Sandbox {
                dir: dir.clone(),
                backend,
            };
            body(&sb);
        })
        .join()
    });
    // Linux: the namespace is gone with its last thread and children. FreeBSD: the
    // test's jails and mounts are taken down. No mount remains below the temp dir,
    // so removing it touches nothing else.
    userland::cleanup(&dir);
    drop(tmp);
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// The tools under test.
pub const TOOLS: &[&str] = &["jmount", "junmount", "jclean", "jupdate"];

/// The directory holding the workspace's built binaries (target/debug). Fails when
/// a binary is missing or older than its sources: `cargo test -p jlayers-tests`
/// alone does not rebuild them.
pub fn bin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        // Another build's tools (e.g. an older commit's, to measure a race test
        // against the code it was written for).
        if let Some(d) = std::env::var_os("JLAYERS_TEST_BIN_DIR") {
            return Ok(PathBuf::from(d));
        }
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let common = newest(&ws.join("common/src"));
        for t in TOOLS {
            let bin = dir.join(t);
            let built = std::fs::metadata(&bin)
                .and_then(|m| m.modified())
                .map_err(|_| {
                    format!(
                        "{} missing: build the tools first (cargo build --workspace)",
                        bin.display()
                    )
                })?;
            if built < common.max(newest(&ws.join(t).join("src"))) {
                return Err(format!(
                    "{} is older than its sources: run cargo build --workspace",
                    bin.display()
                ));
            }
        }
        Ok(dir)
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The newest modification time of the files below `dir`.
fn newest(dir: &Path) -> std::time::SystemTime {
    let mut t = std::time::SystemTime::UNIX_EPOCH;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let m = if p.is_dir() {
                newest(&p)
            } else {
                e.metadata().and_then(|m| m.modified()).unwrap_or(t)
            };
            t = t.max(m);
        }
    }
    t
}

/// The cached Debian bookworm minbase root (target/debian/bookworm-minbase), made
/// by scripts/debian-root.sh on first use: debootstrap into a temp dir renamed when
/// complete, under a lock that concurrent test processes share. Fails saying why
/// when it cannot be made (debootstrap missing, no mirror).
#[cfg(target_os = "linux")]
pub fn debian_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let o = Command::new(ws.join("scripts/debian-root.sh"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("scripts/debian-root.sh: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "no Debian jail root for the real-userland tests (scripts/debian-root.sh):\n{}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let out = String::from_utf8_lossy(&o.stdout);
        Ok(PathBuf::from(out.trim_end()))
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The simulated FreeBSD userland's directory.
pub fn sim_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("freebsd-sim")
}

impl Sandbox {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Write a config, replacing `@T` with the temp dir.
    pub fn conf(&self, text: &str) -> PathBuf {
        let p = self.path("jlayers.conf");
        std::fs::write(&p, text.replace("@T", self.dir.to_str().unwrap())).unwrap();
        p
    }

    /// A tool command with a clean, backend-specific environment.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(bin_dir().join(tool));
        self.backend_env(&mut c);
        c
    }

    /// A tool command run as `uid`:`gid` (an unprivileged host user), from copies
    /// of the tool (and of the FreeBSD simulation) in the temp dir: the checkout may
    /// live where that user cannot reach (root's own home, 0700). The temp dir is
    /// made traversable by everyone.
    pub fn cmd_as(&self, tool: &str, uid: u32, gid: u32) -> Command {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let open = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        open(&self.dir, 0o755);
        let bin = self.path(".anyone");
        let sim = bin.join("freebsd-sim");
        if !bin.exists() {
            std::fs::create_dir_all(&sim).unwrap();
            for t in TOOLS {
                std::fs::copy(bin_dir().join(t), bin.join(t)).unwrap();
                open(&bin.join(t), 0o755);
            }
            for entry in std::fs::read_dir(sim_dir()).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), sim.join(entry.file_name())).unwrap();
                open(&sim.join(entry.file_name()), 0o755);
            }
            open(&bin, 0o755);
            open(&sim, 0o755);
        }
        let mut c = Command::new(bin.join(tool));
        self.backend_env_with(&mut c, &sim);
        c.uid(uid).gid(gid);
        c
    }

    /// The backend's environment: for the FreeBSD simulation, its tools first on
    /// PATH and its state dir.
    pub fn backend_env(&self, c: &mut Command) {
        self.backend_env_with(c, &sim_dir());
    }

    /// [`Sandbox::backend_env`] with the simulation's tools taken from `sim`.
    fn backend_env_with(&self, c: &mut Command, sim: &Path) {
        c.env_remove("JLAYERS_CONF").env("LC_ALL", "C");
        let path = std::env::var_os("PATH").unwrap_or_default();
        match self.backend {
            Backend::Linux => {
                c.env("JLAYERS_PLATFORM", "linux");
            }
            Backend::FreeBsd if !SIMULATED => {
                c.env("JLAYERS_PLATFORM", "freebsd");
            }
            Backend::FreeBsd => {
                let mut p = sim.as_os_str().to_os_string();
                p.push(":");
                p.push(&path);
                c.env("JLAYERS_PLATFORM", "freebsd")
                    .env("PATH", p)
                    .env("SIM_STATE", self.path("sim-state"));
            }
        }
        c.stdin(Stdio::null());
    }

    /// A tool command with `-c <temp>/jlayers.conf` and the given arguments, not
    /// yet run (for tests that add to its environment or its stdio).
    pub fn tool(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(tool);
        c.arg("-c").arg(self.path("jlayers.conf")).args(args);
        c
    }

    /// Run a tool with `-c <temp>/jlayers.conf` and the given arguments.
    pub fn run(&self, tool: &str, args: &[&str]) -> Out {
        Out::from(self.tool(tool, args).output().unwrap())
    }

    /// Start a tool with `-c <temp>/jlayers.conf` and the arguments, its output
    /// piped (for tests that signal or race it).
    pub fn spawn(&self, tool: &str, args: &[&str]) -> std::process::Child {
        self.tool(tool, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Mounts whose mount point lies in the temp dir (not its own tmpfs), in mount
    /// order.
    pub fn mounts(&self) -> Vec<M> {
        read_mounts()
            .into_iter()
            .filter(|m| m.target.starts_with(&self.dir) && m.target != self.dir)
            .collect()
    }

    /// Mounts at one path.
    pub fn mounts_at(&self, rel: &str) -> Vec<String> {
        let p = self.path(rel);
        self.mounts()
            .into_iter()
            .filter(|m| m.target == p)
            .map(|m| m.fstype)
            .collect()
    }

    /// A jail root `name` with these programs in `/bin` (a static busybox on
    /// Linux, the host's own programs on FreeBSD), known to the FreeBSD userland
    /// as jail `name` (`service jail onestart NAME` starts it).
    pub fn jail_root(&self, name: &str, programs: &[&str]) -> PathBuf {
        let root = self.path(name);
        userland::jail_userland(&root, programs);
        userland::register_jail(&userland::sim_state(&self.dir), name, &root);
        root
    }

    /// A jail root `name` holding a real Debian bookworm userland (minbase, made once
    /// by debootstrap and cached under target/, see [`debian_root`]): an overlay of
    /// the cache with an upper dir in the temp dir, so that the jail's writes stay
    /// in the test.
    #[cfg(target_os = "linux")]
    pub fn debian_jail(&self, name: &str) -> PathBuf {
        let lower = debian_root();
        let root = self.path(name);
        let (up, work) = (
            self.path(&format!("{name}.up")),
            self.path(&format!("{name}.work")),
        );
        for d in [&root, &up, &work] {
            std::fs::create_dir_all(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            up.display(),
            work.display()
        );
        nix::mount::mount(
            Some("jlayers-debian"),
            &root,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .expect("overlay of the Debian root");
        root
    }

    /// Whether jail `name` runs, as its backend shows it. FreeBSD: `jls -j NAME`.
    /// Linux has no jail to list (the backend's own `jail_running` is always
    /// false): whether a live process has the jail root `<temp>/NAME` as its root
    /// directory, as jupdate's updater has in its sandbox.
    pub fn jail_running(&self, name: &str) -> bool {
        match self.backend {
            #[cfg(target_os = "linux")]
            Backend::Linux => userland::rooted_at(&self.path(name)),
            _ => {
                self.sh_backend(&format!("jls -j {name} >/dev/null 2>&1"))
                    .code
                    == 0
            }
        }
    }

    /// The mounts at `rel`, oldest first, as (file system type, source) in the
    /// backend's terms: for the FreeBSD backend from its `mount -p` (nullfs shows
    /// the directory it mirrors, unionfs its upper dir); for Linux from the mount
    /// table (a bind shows the directory it mirrors, an overlay its upper dir).
    pub fn sources_at(&self, rel: &str) -> Vec<(String, PathBuf)> {
        let p = self.path(rel);
        match self.backend {
            #[cfg(target_os = "linux")]
            Backend::Linux => userland::sources_at(&p),
            _ => {
                let table = self.sh_backend("mount -p");
                table.code(0);
                table
                    .stdout
                    .lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .filter(|f| f.len() >= 3 && Path::new(f[1]) == p)
                    .map(|f| (f[2].to_string(), PathBuf::from(f[0])))
                    .collect()
            }
        }
    }

    /// Mount a tmpfs at `p` with the host's mount(8) (a foreign mount for jlayers).
    pub fn tmpfs(&self, p: &Path) {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(p)
            .status()
            .expect("run mount(8)");
        assert!(st.success(), "mount -t tmpfs tmpfs {}", p.display());
    }

    /// A shell command in the test's namespace, with the host's tools.
    pub fn sh(&self, script: &str) -> Out {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        Out::from(c.output().unwrap())
    }

    /// A shell command with the backend's tools (the simulated FreeBSD userland
    /// first on PATH for that backend): what an admin's `jmount -n | sh` runs.
    pub fn sh_backend(&self, script: &str) -> Out {
        let mut c = Command::new("sh");
        self.backend_env(&mut c);
        c.arg("-c").arg(script).current_dir(&self.dir);
        Out::from(c.output().unwrap())
    }

    /// The standard scene: a small ports tree, distfiles, two jails.
    pub fn scene(&self) {
        for d in [
            "ports/editors/vim",
            "ports/Mk",
            "distfiles",
            "j1/usr",
            "j2/usr",
        ] {
            std::fs::create_dir_all(self.path(d)).unwrap();
        }
        std::fs::write(self.path("ports/editors/vim/Makefile"), "PORTNAME=vim\n").unwrap();
        std::fs::write(self.path("ports/Mk/bsd.port.mk"), "# framework\n").unwrap();
        std::fs::write(self.path("distfiles/vim-9.1.tar.xz"), "xz").unwrap();
        self.conf(SCENE_CONF);
    }

    /// The standard scene with j1's ports upper made beforehand, holding `files`
    /// (path relative to the upper, contents; parent dirs made): the upper.
    pub fn scene_upper(&self, files: &[(&str, &str)]) -> PathBuf {
        self.scene();
        let up = self.path("upper/j1/ports");
        std::fs::create_dir_all(&up).unwrap();
        for (rel, text) in files {
            let f = up.join(rel);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
        up
    }
}

/// Two jails, a union `ports` layer and a nested `shared` distfiles layer.
pub const SCENE_CONF: &str = r#"
[defaults]
upper_root = "@T/upper"
lock_dir   = "@T/run"
log_dir    = "@T/log"

[[layer]]
name   = "ports"
source = "@T/ports"
target = "usr/ports"

[[layer]]
name   = "distfiles"
source = "@T/distfiles"
target = "usr/ports/distfiles"
mode   = "shared"

[jail.j1]
root = "@T/j1"

[jail.j2]
root = "@T/j2"
"#;

/// The mount table as the test sees it ([`userland::read_mounts`]).
pub fn read_mounts() -> Vec<M> {
    userland::read_mounts()
}

/// A finished run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            raw_stdout: o.stdout,
        }
    }
}

impl Out {
    /// Assert the exit status, showing the whole run when it differs.
    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code, want,
            "exit status; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.code(0)
    }

    #[track_caller]
    pub fn err_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Assert a finished child's exit status, showing its stderr when it differs.
#[track_caller]
pub fn assert_exit(out: &Output, want: i32) {
    assert_eq!(
        out.status.code(),
        Some(want),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every line of `stdout` as a JSON value (the test fails on anything else).
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The string field `key` of every object in the JSON array `list`.
pub fn json_strs<'a>(list: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m[key].as_str().unwrap())
        .collect()
}

/// Read a pty master in a thread until the far side is gone (EOF, or EIO once the
/// last holder of the slave exits), calling `each` with everything read so far
/// after each read; the thread returns all of it.
pub fn read_terminal(
    mut master: std::fs::File,
    mut each: impl FnMut(&[u8]) + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    use std::io::Read;
    std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            each(&raw);
        }
        raw
    })
}

/// Once `ready` holds (or after 10 s), send SIGINT to `child` and collect it.
pub fn interrupt_when(child: std::process::Child, ready: impl Fn() -> bool) -> Output {
    signal_when(child, nix::sys::signal::Signal::SIGINT, ready).0
}

/// Once `ready` holds (or after 10 s), send `sig` to `child`; collect it, and how
/// long it took to exit after the signal.
pub fn signal_when(
    child: std::process::Child,
    sig: nix::sys::signal::Signal,
    ready: impl Fn() -> bool,
) -> (Output, std::time::Duration) {
    let t = std::time::Instant::now();
    while !ready() && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
    let t = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    (out, t.elapsed())
}

impl Sandbox {
    /// Start jclean with `args` and, once it has freed `freed` inodes on the file
    /// system of `up` (or after 10 s), send it `sig` ([`signal_when`]).
    pub fn signal_jclean(
        &self,
        up: &Path,
        freed: u64,
        args: &[&str],
        sig: nix::sys::signal::Signal,
    ) -> (Output, std::time::Duration) {
        let ready = inodes_freed(up, freed);
        let child = self.spawn("jclean", args);
        signal_when(child, sig, ready)
    }
}

/// A readiness check for [`signal_when`]: true once at least `n` inodes were
/// freed on the file system holding `p` (a prune is under way).
pub fn inodes_freed(p: &Path, n: u64) -> impl Fn() -> bool + '_ {
    let free = |p: &Path| nix::sys::statvfs::statvfs(p).map_or(0, |s| s.files_free());
    let start = free(p);
    move || free(p) >= start + n
}

pub fn os(s: &str) -> &OsStr {
    OsStr::from_bytes(s.as_bytes())
}
