//! The walker on temp dirs, without root: order, depth past the descriptors it
//! keeps, width, links never followed, and a tree changed under the walk.

use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Mutex;

use super::*;

/// A visitor that keeps everything and writes down what it met.
#[derive(Default)]
struct Record {
    events: Mutex<Vec<String>>,
    /// Run when the directory at this path is entered.
    hook: Option<(PathBuf, Box<dyn Fn() + Sync>)>,
}

impl Record {
    fn note(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl Visit for Record {
    fn file(&self, at: &At, dir: &OwnedFd, name: &CStr, _: Option<&OwnedFd>) -> Done {
        match stat_here(dir, name) {
            Ok(st) if is_dir(&st) => Done::Dir,
            Ok(_) => {
                self.note(format!("file {}", at.join(name).display()));
                Done::Kept
            }
            Err(_) => Done::Gone,
        }
    }

    fn entered(&self, at: &At, _: &OwnedFd, _: &FileStat, _: Option<bool>) {
        self.note(format!("enter {}", at.rel().display()));
        if let Some((path, hook)) = &self.hook {
            if at.is(path) {
                hook();
            }
        }
    }

    fn leave(&self, at: &At, _: &OwnedFd, name: &CStr, _: &DirStat, _: bool) -> bool {
        self.note(format!("leave {}", at.join(name).display()));
        true
    }

    fn problem(&self, rel: PathBuf, why: String) {
        self.note(format!("problem {}: {why}", rel.display()));
    }
}

fn open(dir: &Path) -> OwnedFd {
    std::fs::File::open(dir).unwrap().into()
}

/// Walk `dir` whole on this thread, in path order.
fn deep(dir: &Path, visitor: &Record, mounts: Vec<Vec<u8>>) -> bool {
    let fd = open(dir);
    let walker = Walker::new(visitor, &fd, mounts).unwrap().in_path_order();
    let top = Entered {
        fd: nix::unistd::dup(&fd).unwrap(),
        st: fstat(&fd).unwrap(),
    };
    walker.deep(top, None, Vec::new())
}

/// A chain far deeper than the descriptors kept, a file at each level: each
/// directory entered then its entries, in path order, left on the way back.
#[test]
fn a_deep_chain_is_walked_in_path_order() {
    let tmp = tempfile::tempdir().unwrap();
    let depth = 4 * FD_KEEP;
    let mut dir = tmp.path().to_path_buf();
    let mut want_in = Vec::new();
    let mut rel = PathBuf::new();
    for level in 0..depth {
        // "a" sorts before "d": the file is met before the subdirectory.
        std::fs::write(dir.join("a"), "").unwrap();
        want_in.push(format!("file {}", rel.join("a").display()));
        rel.push("d");
        dir.push("d");
        std::fs::create_dir(&dir).unwrap();
        want_in.push(format!("enter {}", rel.display()));
        let _ = level;
    }
    let record = Record::default();
    assert!(deep(tmp.path(), &record, Vec::new()));
    let events = record.events();
    let (down, up) = events.split_at(want_in.len());
    assert_eq!(down, want_in);
    let mut want_up: Vec<String> = Vec::new();
    while rel.parent().is_some() && !rel.as_os_str().is_empty() {
        want_up.push(format!("leave {}", rel.display()));
        rel.pop();
    }
    assert_eq!(up, want_up);
}

/// A wide directory: every name once, in byte order, subdirectories walked
/// right after their own entry.
#[test]
fn a_wide_dir_is_walked_in_byte_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for n in 0..500 {
        let name = format!("f{n}");
        std::fs::write(tmp.path().join(&name), "").unwrap();
        want.push((name.clone(), format!("file {name}")));
    }
    for n in 0..20 {
        let name = format!("d{n}");
        std::fs::create_dir(tmp.path().join(&name)).unwrap();
        std::fs::write(tmp.path().join(&name).join("x"), "").unwrap();
        want.push((name.clone(), format!("enter {name}")));
        want.push((format!("{name}/x"), format!("file {name}/x")));
        want.push((format!("{name}/~"), format!("leave {name}")));
    }
    want.sort();
    let want: Vec<String> = want.into_iter().map(|(_, e)| e).collect();
    let record = Record::default();
    deep(tmp.path(), &record, Vec::new());
    assert_eq!(record.events(), want);
}

/// The parallel walk meets the same entries, in no order.
#[test]
fn a_parallel_walk_meets_every_entry() {
    let tmp = tempfile::tempdir().unwrap();
    for a in 0..8 {
        for b in 0..8 {
            let dir = tmp.path().join(format!("{a}/{b}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("f"), "").unwrap();
        }
    }
    let record = Record::default();
    let fd = open(tmp.path());
    let walker = Walker::new(&record, &fd, Vec::new()).unwrap();
    assert!(walker.par(&fd, &[], 0, 1));
    let mut events = record.events();
    events.sort();
    let files = events.iter().filter(|e| e.starts_with("file ")).count();
    let left = events.iter().filter(|e| e.starts_with("leave ")).count();
    assert_eq!((files, left), (64, 72), "{events:?}");
    assert!(events.contains(&"file 7/7/f".to_string()));
}

/// A symlink to a directory is met as a file, never entered: nothing of its
/// target is seen.
#[test]
fn a_symlink_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "").unwrap();
    symlink(outside.path(), tmp.path().join("link")).unwrap();
    let record = Record::default();
    deep(tmp.path(), &record, Vec::new());
    assert_eq!(record.events(), ["file link"]);
}

/// A directory swapped for a symlink after it was listed: handled as what it
/// is now, a file; its target is never walked.
#[test]
fn a_dir_swapped_for_a_link_mid_walk_is_met_as_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "").unwrap();
    for name in ["a", "b"] {
        std::fs::create_dir(tmp.path().join(name)).unwrap();
    }
    let (b, target) = (tmp.path().join("b"), outside.path().to_path_buf());
    let swap = move || {
        std::fs::remove_dir(&b).unwrap();
        symlink(&target, &b).unwrap();
    };
    let record = Record {
        hook: Some((PathBuf::from("a"), Box::new(swap))),
        ..Record::default()
    };
    deep(tmp.path(), &record, Vec::new());
    assert_eq!(record.events(), ["enter a", "leave a", "file b"]);
}

/// A subtree moved away below the descriptors kept: the way back through `..`
/// is not the directory walked down from, so what is above it is left alone
/// and named, not walked from wherever it went.
#[test]
fn a_subtree_moved_mid_walk_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let depth = FD_KEEP + 4;
    let rel: PathBuf = (0..depth).map(|n| format!("d{n}")).collect();
    std::fs::create_dir_all(tmp.path().join(&rel)).unwrap();
    // Moved: the directory whose parent lost its descriptor on the way down.
    let moved: PathBuf = (0..=FD_KEEP).map(|n| format!("d{n}")).collect();
    let (from, to) = (tmp.path().join(&moved), tmp.path().join("elsewhere"));
    let record = Record {
        hook: Some((
            rel.clone(),
            Box::new(move || std::fs::rename(&from, &to).unwrap()),
        )),
        ..Record::default()
    };
    deep(tmp.path(), &record, Vec::new());
    let events = record.events();
    let problem = format!(
        "problem {}: moved during the walk; left alone",
        moved.parent().unwrap().display()
    );
    assert!(events.contains(&problem), "{events:#?}");
    assert!(
        !events.iter().any(|e| e.contains("elsewhere")),
        "{events:#?}"
    );
}

/// A mount point below the upper is skipped and named.
#[test]
fn a_mount_point_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("m/inside")).unwrap();
    let record = Record::default();
    deep(tmp.path(), &record, vec![b"m".to_vec()]);
    let events = record.events();
    assert_eq!(
        events,
        ["problem m: another file system is mounted here; skipped"]
    );
}

#[test]
fn mount_points_below_an_upper() {
    let mounts = [
        PathBuf::from("/up/j"),
        PathBuf::from("/up/j/m"),
        PathBuf::from("/up/jj/m"),
        PathBuf::from("/other"),
    ];
    assert_eq!(below(Path::new("/up/j"), &mounts), [b"m".to_vec()]);
}
