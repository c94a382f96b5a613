//! jlayers: per-jail copy-on-write views of a shared host tree (nullfs + unionfs on
//! FreeBSD, bind + overlayfs on Linux). The four tools are thin front ends to this
//! crate; the contract is their man pages (man/).

mod action;
mod changes;
pub mod cli;
pub mod cmd;
pub mod config;
mod detached;
pub mod exit;
mod guard;
mod help;
mod lock;
pub mod mounts;
pub mod os;
mod plan;
pub mod platform;
mod prune;
pub mod report;
mod roots;
mod signals;
mod stack;
mod step;
mod target;
mod update;
mod upper;
mod walk;
