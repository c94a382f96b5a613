//! The engine's own errors: why a jail's stack was refused or not put back,
//! each with the exit status it means.

use std::fmt;
use std::path::PathBuf;

use crate::exit::{Coded, ExitCode};

/// Why applying or taking down a jail's stacks failed.
#[derive(Debug)]
pub(crate) enum StackError {
    /// The jail root is missing (66).
    NoRoot(PathBuf),
    /// A layer's source is missing (66).
    NoSource(PathBuf),
    /// Something not of the plan is mounted at a target to stack on (69).
    Foreign { target: PathBuf, top: String },
    /// Something not of the plan is mounted on top of a layer to take down (69).
    OnTop { target: PathBuf, top: String },
    /// The stack's union shows up elsewhere: the jail moved a dir above its
    /// target (75).
    Moved { target: PathBuf, moved: PathBuf },
    /// The jail runs: its layers are not taken from under it without -f (75).
    Running(String),
    /// Uppers a union that `junmount -f` detached still uses, each as
    /// `LAYER: who` (75).
    LiveUppers(Vec<String>),
    /// Targets to unmount that are held or have a mount below them, each as
    /// `LAYER: TARGET: busy: ...` (75).
    Held(Vec<String>),
    /// An unmount failed midway: its error's line and status, the layers taken
    /// down, and why mounting them again failed (`None`: they are back).
    PutBack {
        failed: String,
        code: ExitCode,
        layers: String,
        again: Option<String>,
    },
    /// A jail `--remount` stopped whose layers did not all come back (69).
    LeftStopped,
}

/// What jmount, junmount and jclean all advise for a mount at a target that
/// jlayers did not make: it is the administrator's to take off.
pub(crate) fn foreign_advice(target: &std::path::Path) -> String {
    format!("to take it off: umount {}", target.display())
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StackError::*;
        match self {
            NoRoot(root) => write!(f, "jail root {} does not exist", root.display()),
            NoSource(source) => write!(f, "source {} does not exist", source.display()),
            Foreign { target, top } => write!(
                f,
                "{}: {top} is mounted there, not as planned; not stacking on it ({})",
                target.display(),
                foreign_advice(target)
            ),
            OnTop { target, top } => write!(
                f,
                "{}: {top} is mounted on top of this layer; left alone ({})",
                target.display(),
                foreign_advice(target)
            ),
            Moved { target, moved } => write!(
                f,
                "{}: not mounted there, but its union is mounted on {} (a directory above \
                 the target was moved); nothing unmounted: move it back, then junmount again",
                target.display(),
                moved.display()
            ),
            Running(jail) => write!(
                f,
                "jail is running (jls -j {jail} shows it); stop it first, or use -f"
            ),
            LiveUppers(refused) => write!(f, "{}; nothing mounted", refused.join("; ")),
            Held(held) => write!(f, "{}; nothing unmounted", held.join("; ")),
            PutBack {
                failed,
                layers,
                again: None,
                ..
            } => write!(
                f,
                "{failed}; mounted again what this run took down ({layers})"
            ),
            PutBack {
                failed,
                layers,
                again: Some(why),
                ..
            } => write!(
                f,
                "{failed}; mounting again what this run took down ({layers}) failed: {why}"
            ),
            LeftStopped => f.write_str("the jail is left stopped: its layers are not all back"),
        }
    }
}

impl std::error::Error for StackError {}

impl Coded for StackError {
    fn code(&self) -> ExitCode {
        use StackError::*;
        match self {
            NoRoot(_) | NoSource(_) => ExitCode::NoInput,
            Foreign { .. } | OnTop { .. } | LeftStopped => ExitCode::Unavailable,
            Moved { .. } | Running(_) | LiveUppers(_) | Held(_) => ExitCode::TempFail,
            PutBack { code, .. } => *code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StackError::*;
    use super::*;
    use crate::exit::check_domain;

    #[test]
    fn each_refusal_its_code_and_line() {
        let p = |s: &str| PathBuf::from(s);
        check_domain(
            NoRoot(p("/j")),
            ExitCode::NoInput,
            "jail root /j does not exist",
        );
        check_domain(
            NoSource(p("/p")),
            ExitCode::NoInput,
            "source /p does not exist",
        );
        check_domain(
            Foreign {
                target: p("/j/p"),
                top: "tmpfs tmpfs".into(),
            },
            ExitCode::Unavailable,
            "/j/p: tmpfs tmpfs is mounted there, not as planned; not stacking on it \
             (to take it off: umount /j/p)",
        );
        check_domain(
            OnTop {
                target: p("/j/p"),
                top: "tmpfs tmpfs".into(),
            },
            ExitCode::Unavailable,
            "/j/p: tmpfs tmpfs is mounted on top of this layer; left alone \
             (to take it off: umount /j/p)",
        );
        check_domain(
            Moved {
                target: p("/j/p"),
                moved: p("/j/q"),
            },
            ExitCode::TempFail,
            "/j/p: not mounted there, but its union is mounted on /j/q (a directory above \
             the target was moved); nothing unmounted: move it back, then junmount again",
        );
        check_domain(
            Running("web".into()),
            ExitCode::TempFail,
            "jail is running (jls -j web shows it); stop it first, or use -f",
        );
    }

    #[test]
    fn each_busy_refusal_its_code_and_line() {
        check_domain(
            LiveUppers(vec!["a: pid 1".into(), "b: pid 2".into()]),
            ExitCode::TempFail,
            "a: pid 1; b: pid 2; nothing mounted",
        );
        check_domain(
            Held(vec!["a: busy".into()]),
            ExitCode::TempFail,
            "a: busy; nothing unmounted",
        );
        let put_back = |again| PutBack {
            failed: "b: busy".into(),
            code: ExitCode::TempFail,
            layers: "a".into(),
            again,
        };
        check_domain(
            put_back(None),
            ExitCode::TempFail,
            "b: busy; mounted again what this run took down (a)",
        );
        check_domain(
            put_back(Some("a: gone".into())),
            ExitCode::TempFail,
            "b: busy; mounting again what this run took down (a) failed: a: gone",
        );
        check_domain(
            LeftStopped,
            ExitCode::Unavailable,
            "the jail is left stopped: its layers are not all back",
        );
    }
}
