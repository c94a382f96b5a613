//! Linux: bind mounts and overlayfs, by system call; the table from mountinfo.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Bound;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use nix::errno::Errno;
use nix::mount::MntFlags;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use self::error::LinuxError;
use super::{MountId, Mounted, Platform, changed};
use crate::exit::Domain;
use crate::mounts::{LinuxInfo, Mount};
use crate::platform::Busy;
use crate::step::{Null, Step, Tmpfs, Union};
use crate::target::Place;

mod api;
mod cgroup;
mod error;
mod holders;
mod overlay;
mod sandbox;

pub use crate::mounts::mountinfo::parse_mountinfo;
use overlay::{Layers, OverlayError, options_word, overlay, overlay_args};

/// The Linux backend. It keeps the mount table it read, with the open mountinfo
/// file: the kernel flags that file (POLLPRI) whenever the namespace's mounts change,
/// so a run over hundreds of jails reads the table once instead of once a jail.
#[derive(Default)]
pub(crate) struct Linux {
    cache: Mutex<Option<Cache>>,
    /// Sources' bind identities (see [`Linux::bind_root`]), worked out once a run.
    binds: Mutex<HashMap<OsString, Option<BindRoot>>>,
    /// A detached copy of each source, made once a run, that the bind mounts are
    /// cloned from (`None`: the kernel cannot clone a detached mount).
    templates: Mutex<HashMap<PathBuf, Option<OwnedFd>>>,
    /// The last mount made: its target, its id and the descriptor that the check
    /// after it found at the planned path (a stack's next step goes on top of it).
    last: Mutex<Option<(PathBuf, MountId, OwnedFd)>>,
}

/// How a bind mount of a source shows in mountinfo: the device of its file system
/// and the source directory's path within that file system (the root field).
type BindRoot = ((u32, u32), PathBuf);

struct Cache {
    file: File,
    table: Arc<Vec<Mount>>,
    /// Targets this process mounted or unmounted on since the table was read,
    /// sorted by component: those below a scope are a range of them.
    touched: BTreeSet<PathBuf>,
}

impl Cache {
    /// Whether this process changed a mount at, below or above `scope`.
    fn touched_near(&self, scope: &Path) -> bool {
        let below = self
            .touched
            .range::<Path, _>((Bound::Included(scope), Bound::Unbounded))
            .next()
            .is_some_and(|t| t.starts_with(scope));
        below || scope.ancestors().any(|a| self.touched.contains(a))
    }
}

/// Whether the namespace's mounts changed since the last poll (which acknowledges).
fn table_changed(file: &File) -> bool {
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

impl Linux {
    fn read_table(file: &mut File) -> Result<Vec<Mount>> {
        let mut raw = Vec::with_capacity(64 * 1024);
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut raw))
            .map_err(|e| Domain::error(LinuxError::MountTable(e)))?;
        Ok(parse_mountinfo(&raw))
    }

    /// A detached mount of what `step` mounts; `lower` is the target's top (the
    /// union's lower layer).
    fn make(&self, step: Step, target: &Path, lower: BorrowedFd<'_>) -> Result<OwnedFd> {
        match step {
            Step::Null(Null { source, read_only }) => {
                let tree = self
                    .bind_clone(source)
                    .map_err(|e| LinuxError::mount(e, "bind mount", target))?;
                if *read_only {
                    api::set_read_only(tree.as_fd())
                        .map_err(|e| LinuxError::mount(e, "read-only bind mount", target))?;
                }
                Ok(tree)
            }
            Step::Tmpfs(Tmpfs { size, access }) => {
                let err = |e: Errno| LinuxError::mount(e, "tmpfs", target);
                let fs = api::NewFs::new(c"tmpfs").map_err(err)?;
                fs.set("source", OsStr::new("tmpfs")).map_err(err)?;
                // The root holds the upper and work dirs: closed to host users
                // (jlayers.conf(5) upper_group), not tmpfs's 1777.
                let mode = format!("{:04o}", access.mode());
                fs.set("mode", OsStr::new(&mode)).map_err(err)?;
                if let Some(gid) = access.gid {
                    fs.set("gid", OsStr::new(&gid.to_string())).map_err(err)?;
                }
                if let Some(size) = size {
                    fs.set("size", OsStr::new(size)).map_err(err)?;
                }
                fs.mount(0).map_err(|(errno, log)| {
                    let failed = LinuxError::mount(errno, "tmpfs", target);
                    if log.is_empty() {
                        failed
                    } else {
                        failed.context(log)
                    }
                })
            }
            Step::Union(Union {
                upper,
                work,
                options,
            }) => {
                let upper_fd = upper.open_dir()?;
                let work_fd = match work {
                    Some(work) => work.open_dir()?,
                    None => return Err(Domain::error(LinuxError::NoWorkDir)),
                };
                let by_path =
                    std::env::var_os("JLAYERS_OVERLAY_LAYERS").is_some_and(|v| v == "paths");
                if !by_path {
                    let fds = Layers::Fds(lower, upper_fd.as_fd(), work_fd.as_fd());
                    match overlay(upper, options, fds) {
                        Err(OverlayError::Refused) => {}
                        result => return result.map_err(|e| e.into_error(target)),
                    }
                }
                let paths = Layers::Paths(lower, upper_fd.as_fd(), work_fd.as_fd());
                overlay(upper, options, paths).map_err(|e| e.into_error(target))
            }
        }
    }

    /// A detached bind mount of `source`. Cloning the path makes the kernel look
    /// at every mount below the file system that holds it (has_locked_children),
    /// and the jails' own mounts are there, so each clone would cost more than the
    /// last: the source is cloned by path once a run, and every bind mount is a
    /// clone of that copy, which has no mounts below it.
    fn bind_clone(&self, source: &Path) -> nix::Result<OwnedFd> {
        let mut templates = self.templates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = templates.get(source) {
            return match known {
                Some(template) => api::clone_detached(template.as_fd()),
                None => api::open_tree_clone(source),
            };
        }
        let first = api::open_tree_clone(source)?;
        let template = api::open_tree_clone(source)
            .ok()
            .filter(|t| api::clone_detached(t.as_fd()).is_ok());
        templates.insert(source.to_path_buf(), template);
        Ok(first)
    }

    /// Where a bind mount of `source` shows in mountinfo. The root field is the
    /// directory's path within its file system, not within this process's view:
    /// it is the root of the mount holding `source` plus `source`'s path below that
    /// mount's point. (They differ whenever that mount is itself a bind of a
    /// subdirectory, as `/` is in a container or after pivot_root.)
    fn bind_root(&self, source: &Path) -> Option<BindRoot> {
        let mut binds = self.binds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = binds.get(source.as_os_str()) {
            return known.clone();
        }
        let found = (|| {
            let real = std::fs::canonicalize(source).ok()?;
            let fd = nix::fcntl::open(
                &real,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()?;
            let id = api::mount_id(fd.as_fd()).ok()?;
            let table = self.mounts(&real).ok()?;
            let holder = table.iter().rev().find(|m| m.linux_id() == Some(id))?;
            let below = real.strip_prefix(&holder.target).ok()?;
            let info = holder.linux.as_ref()?;
            Some((info.dev, info.root.join(below)))
        })();
        binds.insert(source.as_os_str().to_owned(), found.clone());
        found
    }

    /// Around a mount or unmount of ours: a change seen before it is someone
    /// else's (drop the table); the one after it is ours (note where).
    fn our_change<T>(&self, target: &Path, op: impl FnOnce() -> T) -> T {
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|c| table_changed(&c.file)) {
            *guard = None;
        }
        let result = op();
        if let Some(cache) = guard.as_mut() {
            table_changed(&cache.file);
            cache.touched.insert(target.to_path_buf());
        }
        result
    }
}

impl Platform for Linux {
    fn mounts(&self, scope: &Path) -> Result<Arc<Vec<Mount>>> {
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cache) = guard.as_mut() {
            if !table_changed(&cache.file) && !cache.touched_near(scope) {
                return Ok(cache.table.clone());
            }
            cache.table = Arc::new(Self::read_table(&mut cache.file)?);
            cache.touched.clear();
            return Ok(cache.table.clone());
        }
        let mut file = File::open("/proc/self/mountinfo")
            .map_err(|e| Domain::error(LinuxError::MountTable(e)))?;
        let table = Arc::new(Self::read_table(&mut file)?);
        *guard = Some(Cache {
            file,
            table: table.clone(),
            touched: BTreeSet::new(),
        });
        Ok(table)
    }

    fn matches(&self, step: Step, mount: &Mount) -> bool {
        match step {
            Step::Null(Null { source, read_only }) => {
                *read_only == mount.read_only()
                    && self
                        .bind_root(source)
                        .zip(mount.linux.as_ref())
                        .is_some_and(|((dev, root), info)| info.dev == dev && info.root == root)
            }
            // jlayers names the overlay after its upper dir (the source field, as
            // unionfs shows it); the kernel's upperdir= is the upper's real path.
            Step::Union(Union { upper, .. }) => {
                mount.fstype == "overlay"
                    && (mount.source == upper.path.as_os_str()
                        || mount.linux.as_ref().and_then(|l| l.fs_option("upperdir"))
                            == Some(upper.path.as_os_str()))
            }
            Step::Tmpfs(_) => mount.fstype == "tmpfs",
        }
    }

    /// A bind mount shows its source's file system type; what identifies it is
    /// the device and root field, as [`Linux::bind_root`] finds them.
    fn planned(&self, step: Step, target: &Path) -> Mount {
        let mut line = super::planned_line(step, target, "bind", "overlay");
        if let Step::Null(Null { source, .. }) = step {
            line.linux = self.bind_root(source).map(|(dev, root)| LinuxInfo {
                id: 0,
                dev,
                root,
                fs_options: Vec::new(),
            });
        }
        line
    }

    fn pin(&self, target: &Place, top: &Mount) -> Result<MountId> {
        // The id read from the table; unmount checks it against what a descriptor
        // opened beneath the root finds, right before acting.
        top.linux_id()
            .map(|id| MountId(id.to_string()))
            .ok_or_else(|| changed(target, "no mount id in the mount table"))
    }

    fn mount(&self, step: Step, target: &Place, below: Option<&MountId>) -> Result<Mounted> {
        // On top of the mount just made here, the descriptor its check found at
        // the planned path pins the target already: no second walk.
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
        let pin = match last {
            Some((path, id, fd)) if path == target.path && Some(&id) == below => fd,
            _ => target.open_dir()?,
        };
        if let Some(below) = below {
            if id_of(pin.as_fd(), target)? != *below {
                return Err(changed(target, "the mount below is not the one checked"));
            }
        }
        let new = self.make(step, &target.path, pin.as_fd())?;
        self.our_change(&target.path, || {
            api::move_mount_onto(new.as_fd(), pin.as_fd())
        })
        .map_err(|e| LinuxError::mount(e, "attach mount", &target.path))?;
        drop(pin);
        // The planned path, walked again without following links, must lead to the
        // new mount; else it went where a jail moved the directory: undo it.
        let id = id_of(new.as_fd(), target)?;
        let there = target.open_dir().ok();
        let found = there.as_ref().map(|fd| id_of(fd.as_fd(), target));
        if !matches!(found, Some(Ok(ref found_id)) if *found_id == id) {
            let _ = self.our_change(&target.path, || api::detach(new.as_fd()));
            return Err(changed(
                target,
                "the new mount was not at the planned path; undone",
            ));
        }
        if let Some(fd) = there {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((target.path.clone(), id.clone(), fd));
        }
        Ok(Mounted { id, fd: Some(new) })
    }

    fn release(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn discard(&self, made: Mounted) -> Result<()> {
        self.release();
        // Lazily: the descriptor itself keeps the mount busy.
        let Some(fd) = made.fd else { return Ok(()) };
        self.our_change(Path::new("/"), || api::detach(fd.as_fd()))
            .map_err(|e| {
                Domain::error(LinuxError::Detach {
                    id: made.id.0.clone(),
                    source: e.into(),
                })
            })
    }

    fn unmount(&self, target: &Place, id: &MountId, busy: Busy) -> Result<()> {
        self.release();
        let Some((parent, name)) = target.split() else {
            return Err(changed(target, "no parent directory"));
        };
        let dir = parent.open_dir()?;
        let now = api::mount_id_at(dir.as_fd(), name).map_err(|e| {
            Domain::error(LinuxError::TopMount {
                path: target.path.clone(),
                source: e.into(),
            })
        })?;
        if now.to_string() != id.0 {
            return Err(changed(
                target,
                "the top mount is not the one in the mount table",
            ));
        }
        // The parent is pinned; only the last component is looked up, and a link
        // there is not followed. The name is a mount point, which nobody in this
        // namespace can rename or replace.
        let path = api::fd_path(dir.as_fd()).join(name);
        let mut flags = MntFlags::UMOUNT_NOFOLLOW;
        if busy == Busy::Force {
            flags |= MntFlags::MNT_DETACH;
        }
        let shown = &target.path;
        // EBUSY may be only for a moment: a child another jail's thread has just
        // forked (jupdate -j) holds copies of this run's descriptors, pinned
        // targets among them, until it execs. Look again briefly before saying
        // busy; a real holder (refused up front by junmount) stays busy.
        let mut nap = std::time::Duration::from_millis(5);
        let mut result = self.our_change(shown, || nix::mount::umount2(&path, flags));
        while result == Err(Errno::EBUSY) && nap <= std::time::Duration::from_millis(160) {
            std::thread::sleep(nap);
            nap *= 2;
            result = self.our_change(shown, || nix::mount::umount2(&path, flags));
        }
        result.map_err(|errno| LinuxError::unmount(errno, shown))
    }

    fn mount_command(&self, step: Step, target: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["mount".into()];
        match step {
            Step::Tmpfs(tmpfs) => {
                argv.extend(["-t".into(), "tmpfs".into(), "-o".into()]);
                argv.push(super::tmpfs_options(tmpfs).into());
                argv.push("tmpfs".into());
            }
            Step::Null(Null { source, read_only }) => {
                argv.push("--bind".into());
                if *read_only {
                    argv.extend(["-o".into(), "ro".into()]);
                }
                argv.push(source.into());
            }
            Step::Union(Union {
                upper,
                work,
                options,
            }) => {
                let (flags, data) = overlay_args(
                    target,
                    &upper.path,
                    work.as_ref().map(|w| w.path.as_path()),
                    options,
                );
                argv.extend([
                    "-t".into(),
                    "overlay".into(),
                    upper.path.clone().into(),
                    "-o".into(),
                    options_word(flags, &data),
                ]);
            }
        }
        argv.push(target.into());
        argv
    }

    /// mount(8) splits `-o` at commas outside double quotes and has no escape for a
    /// quote itself, so a layer path holding `"` (or `,` `:` `\\`, which overlayfs
    /// needs escaped) goes in as `/proc/self/fd/N`, opened by sh on that descriptor:
    /// the same mount, whatever the path holds.
    fn print_mount(&self, step: Step, target: &Path) {
        let Step::Union(Union {
            upper,
            work,
            options,
        }) = step
        else {
            return crate::report::sh_line(&self.mount_command(step, target));
        };
        let odd = |p: &Path| {
            p.as_os_str()
                .as_bytes()
                .iter()
                .any(|b| b"\",:\\".contains(b))
        };
        let mut layers = vec![target, upper.path.as_path()];
        layers.extend(work.as_ref().map(|w| w.path.as_path()));
        if !layers.iter().any(|p| odd(p)) {
            return crate::report::sh_line(&self.mount_command(step, target));
        }
        let inputs: Vec<(u32, &Path)> = (3..).zip(layers).collect();
        let fd = |i: u32| PathBuf::from(format!("/proc/self/fd/{i}"));
        let work_path = work.as_ref().map(|_| fd(5));
        let (flags, data) = overlay_args(&fd(3), &fd(4), work_path.as_deref(), options);
        let mut argv = self.mount_command(step, target);
        // The options word is the one before the target.
        let at = argv.len() - 2;
        argv[at] = options_word(flags, &data);
        crate::report::sh_line_with_inputs(&argv, &inputs);
    }

    fn force_flag(&self) -> &'static str {
        "-l"
    }

    fn holders(&self, target: &Path) -> Vec<super::Holder> {
        holders::holders(target)
    }

    fn holders_of(&self, targets: &[&Path]) -> Vec<Vec<super::Holder>> {
        holders::holders_of(targets)
    }

    /// A lazily detached overlay lives on, writing to its upper, while used.
    fn detachable(&self, top: &Mount) -> Option<(String, u64)> {
        let info = top.linux.as_ref().filter(|_| top.fstype == "overlay")?;
        Some((format!("{}:{}", info.dev.0, info.dev.1), info.id))
    }

    fn detached_users(&self, dev: &str, mnt: u64) -> Vec<super::Holder> {
        holders::on_device(dev, mnt)
    }

    fn busy_hint(&self, target: &Path) -> String {
        format!(
            "a process has a file open or its working directory below it, or a chroot is running there (see: fuser -vm {})",
            target.display()
        )
    }

    fn jail_running(&self, _jail: &str) -> Result<bool> {
        Ok(false)
    }

    fn service_command(&self, _jail: &str, _to: super::Service) -> Option<Vec<OsString>> {
        None
    }

    fn exec_command(&self, exec: &super::Exec) -> Command {
        let (jail, root, env, cmd) = (exec.jail, exec.root, exec.env, exec.cmd);
        // A clean environment, as a login would give: PATH and HOME, the caller's
        // TERM (for -i), then what jupdate sets.
        let mut command = Command::new(in_jail_path(root, &cmd[0]));
        command
            .args(&cmd[1..])
            .env_clear()
            .env("PATH", JAIL_PATH)
            .env("HOME", "/root");
        if let Some(term) = std::env::var_os("TERM") {
            command.env("TERM", term);
        }
        command.envs(env.iter().copied());
        super::own_session(&mut command);
        let network = match exec.network {
            crate::config::Network::None => sandbox::Net::Loopback,
            crate::config::Network::Host => sandbox::Net::Host,
        };
        sandbox::confine(&mut command, root, jail, network, exec.hold);
        command
    }

    fn limit(
        &self,
        jail: &str,
        limits: &crate::config::Limits,
    ) -> Result<Option<Box<dyn super::Limited>>> {
        Ok(
            cgroup::RunCgroup::create(jail, limits)?
                .map(|c| Box::new(c) as Box<dyn super::Limited>),
        )
    }

    fn limit_sh(&self, jail: &str, limits: &crate::config::Limits) -> (Vec<String>, Vec<String>) {
        (vec![cgroup::describe(jail, limits)], Vec::new())
    }

    /// The sandbox's PID namespace dies with its pid 1: nothing of the run is
    /// left to hold the pipe.
    fn output_through_pipe(&self) -> bool {
        true
    }

    /// The sandbox's namespaces, no_new_privs and capabilities as util-linux
    /// gives them, the new session keyring as keyutils does, then the command
    /// with its environment. jupdate does more, by system call (pivot_root,
    /// nodev, its own /proc, /dev and /sys, lo up, the seccomp filter):
    /// jupdate(8) lists what this line lacks.
    fn exec_sh_argv(&self, exec: &super::Exec) -> Vec<OsString> {
        let (root, command) = (exec.root, self.exec_command(exec));
        let mut argv: Vec<OsString> = ["unshare", "--mount", "--pid", "--ipc", "--uts"]
            .map(OsString::from)
            .to_vec();
        if exec.network == crate::config::Network::None {
            argv.push("--net".into());
        }
        argv.extend(
            [
                "--fork",
                "--propagation",
                "private",
                "setpriv",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+sys_chroot,+audit_write,+setfcap",
                // keyutils: a new anonymous session keyring.
                "keyctl",
                "session",
                "-",
                "chroot",
            ]
            .map(OsString::from),
        );
        argv.extend([root.as_os_str().to_os_string(), "env".into(), "-i".into()]);
        argv.extend(command.get_envs().filter_map(|(key, value)| {
            let mut key_value = key.to_os_string();
            key_value.push("=");
            key_value.push(value?);
            Some(key_value)
        }));
        argv.extend(super::argv_of(&command));
        argv
    }
}

/// The jail's PATH as a login gives it.
const JAIL_PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin";

/// Where `prog` is inside the jail, by its PATH. std would search the host's PATH
/// before the sandbox's pivot_root(2) takes effect, so the search is done here, in the jail's tree
/// (an entry is enough: it may be a link that makes sense only inside).
fn in_jail_path(root: &Path, prog: &str) -> PathBuf {
    if prog.contains('/') {
        return PathBuf::from(prog);
    }
    JAIL_PATH
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| std::fs::symlink_metadata(root.join(p.strip_prefix("/").unwrap_or(p))).is_ok())
        .unwrap_or_else(|| PathBuf::from(prog))
}

/// The mount id of what `fd` pins.
fn id_of(fd: BorrowedFd<'_>, target: &Place) -> Result<MountId> {
    api::mount_id(fd)
        .map(|id| MountId(id.to_string()))
        .map_err(|errno| {
            Domain::error(LinuxError::MountId {
                path: target.path.clone(),
                errno,
            })
        })
}
