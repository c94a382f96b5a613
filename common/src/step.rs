//! The mount steps a layer's stack is made of, and the access of the dirs
//! around its upper dir: plain data, which the plan fills and a backend performs.

use std::path::{Path, PathBuf};

use crate::target::Place;

/// Who may pass the dirs jlayers owns around the uppers: root alone (0700), or
/// root and a group (0710).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Access {
    pub(crate) gid: Option<u32>,
}

impl Access {
    pub(crate) fn mode(self) -> u32 {
        if self.gid.is_some() { 0o710 } else { 0o700 }
    }

    /// A tmpfs's root as mount(8) takes it on both systems: `mode=0700`, or
    /// `mode=0710,gid=N`.
    pub(crate) fn tmpfs_options(self) -> String {
        match self.gid {
            Some(gid) => format!("mode=0710,gid={gid}"),
            None => "mode=0700".into(),
        }
    }

    /// For messages: `0700`, or `0710, group 5`.
    pub(crate) fn describe(self) -> String {
        match self.gid {
            Some(gid) => format!("0710, group {gid}"),
            None => "0700".into(),
        }
    }

    /// The sh commands that set a dir to it (`-n`, and the fix a warning names).
    pub(crate) fn commands(self, path: &Path) -> Vec<Vec<std::ffi::OsString>> {
        let mut out = vec![vec![
            "chmod".into(),
            format!("{:04o}", self.mode()).into(),
            path.into(),
        ]];
        if let Some(gid) = self.gid {
            out.push(vec!["chgrp".into(), gid.to_string().into(), path.into()]);
        }
        out
    }
}

/// nullfs (FreeBSD) / bind mount (Linux) of a host directory on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Null {
    pub(crate) source: PathBuf,
    pub(crate) read_only: bool,
}

/// unionfs (FreeBSD) / overlay (Linux) of the upper dir over what the target shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Union {
    pub(crate) upper: Place,
    /// Linux's overlay work dir, a sibling of `upper`; `None` on FreeBSD.
    pub(crate) work: Option<Place>,
    pub(crate) options: Vec<String>,
}

/// A tmpfs of its own for a union layer's upper (and, on Linux, work) dir, mounted
/// on the upper's place before the layer's stack; `size` as tmpfs takes it (`4g`),
/// `None` for the kernel's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tmpfs {
    pub(crate) size: Option<String>,
    /// Its root's mode and group: it holds the upper dir.
    pub(crate) access: Access,
}

/// The mounts of one stack, bottom first. The compiler keeps the plan's rules: a
/// union only ever goes on top of its layer's null mount, and a tmpfs upper is a
/// stack of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A layer: the host directory, and the union of its upper dir if it has one.
    Layer { null: Null, union: Option<Union> },
    /// The tmpfs a layer's upper dir lives in.
    UpperTmpfs(Tmpfs),
}

/// One mount of a stack, as a backend performs, matches and prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    Null(&'a Null),
    Union(&'a Union),
    Tmpfs(&'a Tmpfs),
}

impl Shape {
    /// The mounts, bottom first.
    pub(crate) fn steps(&self) -> impl DoubleEndedIterator<Item = Step<'_>> + ExactSizeIterator {
        // A fixed pair cut to length: no allocation, and both ends reachable.
        let (bottom, top, count) = match self {
            Shape::Layer {
                null,
                union: Some(union),
            } => (Step::Null(null), Step::Union(union), 2),
            Shape::Layer { null, union: None } => (Step::Null(null), Step::Null(null), 1),
            Shape::UpperTmpfs(tmpfs) => (Step::Tmpfs(tmpfs), Step::Tmpfs(tmpfs), 1),
        };
        [bottom, top].into_iter().take(count)
    }

    /// The bottom `count` mounts (1 or more) of the stack: what is left of it when the
    /// top ones are taken down.
    pub(crate) fn cut(&self, count: usize) -> Shape {
        match self {
            Shape::Layer { null, .. } if count < 2 => Shape::Layer {
                null: null.clone(),
                union: None,
            },
            _ => self.clone(),
        }
    }

    /// The layer's host directory: its null mount.
    pub(crate) fn null(&self) -> Option<&Null> {
        match self {
            Shape::Layer { null, .. } => Some(null),
            Shape::UpperTmpfs(_) => None,
        }
    }

    /// The layer's union, if it has one.
    pub(crate) fn union(&self) -> Option<&Union> {
        match self {
            Shape::Layer { union, .. } => union.as_ref(),
            Shape::UpperTmpfs(_) => None,
        }
    }
}

impl Step<'_> {
    /// The step's kind, as the JSON records name it.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Step::Null(_) => "null",
            Step::Union(_) => "union",
            Step::Tmpfs(_) => "tmpfs",
        }
    }

    /// What the step mounts, as a record shows it.
    pub(crate) fn source_shown(self) -> PathBuf {
        match self {
            Step::Null(null) => null.source.clone(),
            Step::Union(union) => union.upper.path.clone(),
            Step::Tmpfs(_) => PathBuf::from("tmpfs"),
        }
    }

    /// The step in words, for `-v`.
    pub(crate) fn describe(self) -> String {
        match self {
            Step::Null(Null {
                source,
                read_only: true,
            }) => format!("read-only null mount of {}", source.display()),
            Step::Null(null) => format!("null mount of {}", null.source.display()),
            Step::Union(union) => format!("union mount of {}", union.upper.path.display()),
            Step::Tmpfs(_) => "tmpfs for the upper dir".to_string(),
        }
    }
}
