//! jlayers: per-jail copy-on-write views of a shared host tree (nullfs + unionfs on
//! FreeBSD, bind + overlayfs on Linux). The four tools are thin front ends to this
//! crate; the contract is their man pages (man/).

pub mod action;
pub mod changes;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod exit;
pub mod help;
pub mod lock;
pub mod mounts;
pub mod plan;
pub mod platform;
pub mod prune;
pub mod report;
pub mod roots;
pub mod signals;
pub mod stack;
pub mod target;
pub mod update;
pub mod upper;
pub mod walk;
