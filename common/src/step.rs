//! What a layer's stack is made of: its [`Shape`] (the mounts the plan stacks on
//! one target, bottom first) and each mount of it as a [`Step`], what a backend
//! performs. Its own module, so that the plan and the backends use it without
//! importing each other.

use std::path::PathBuf;

use crate::target::Place;

/// nullfs (FreeBSD) / bind mount (Linux) of a host directory on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Null {
    pub source: PathBuf,
    pub read_only: bool,
}

/// unionfs (FreeBSD) / overlay (Linux) of the upper dir over what the target shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Union {
    pub upper: Place,
    /// Linux's overlay work dir, a sibling of `upper`; `None` on FreeBSD.
    pub work: Option<Place>,
    pub options: Vec<String>,
}

/// A tmpfs of its own for a union layer's upper (and, on Linux, work) dir, mounted
/// on the upper's place before the layer's stack; `size` as tmpfs takes it (`4g`),
/// `None` for the kernel's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tmpfs {
    pub size: Option<String>,
}

/// The mounts of one stack, bottom first. The compiler keeps the plan's rules: a
/// union only ever goes on top of its layer's null mount, and a tmpfs upper is a
/// stack of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A layer: the host directory, and the union of its upper dir if it has one.
    Layer { null: Null, union: Option<Union> },
    /// The tmpfs a layer's upper dir lives in.
    UpperTmpfs(Tmpfs),
}

/// One mount of a stack, as a backend performs, matches and prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Null(&'a Null),
    Union(&'a Union),
    Tmpfs(&'a Tmpfs),
}

/// What an unmount does with a busy mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// Fail (75), naming what holds it.
    Fail,
    /// Take it away all the same (`-f`: `umount -f`, a lazy detach on Linux).
    Force,
}

impl Shape {
    /// The mounts, bottom first.
    pub fn steps(&self) -> impl DoubleEndedIterator<Item = Step<'_>> + ExactSizeIterator {
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
    pub fn cut(&self, count: usize) -> Shape {
        match self {
            Shape::Layer { null, .. } if count < 2 => Shape::Layer {
                null: null.clone(),
                union: None,
            },
            _ => self.clone(),
        }
    }

    /// The layer's host directory: its null mount.
    pub fn null(&self) -> Option<&Null> {
        match self {
            Shape::Layer { null, .. } => Some(null),
            Shape::UpperTmpfs(_) => None,
        }
    }

    /// The layer's union, if it has one.
    pub fn union(&self) -> Option<&Union> {
        match self {
            Shape::Layer { union, .. } => union.as_ref(),
            Shape::UpperTmpfs(_) => None,
        }
    }
}

impl Step<'_> {
    /// The step's kind, as the JSON records name it.
    pub fn kind(self) -> &'static str {
        match self {
            Step::Null(_) => "null",
            Step::Union(_) => "union",
            Step::Tmpfs(_) => "tmpfs",
        }
    }

    /// What the step mounts, as a record shows it.
    pub fn source_shown(self) -> PathBuf {
        match self {
            Step::Null(null) => null.source.clone(),
            Step::Union(union) => union.upper.path.clone(),
            Step::Tmpfs(_) => PathBuf::from("tmpfs"),
        }
    }

    /// The step in words, for `-v`.
    pub fn describe(self) -> String {
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
