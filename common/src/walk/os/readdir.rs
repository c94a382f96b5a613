//! The portable reader of entries: readdir(3) on a duplicate descriptor.

use std::ffi::CStr;
use std::os::fd::OwnedFd;

use crate::walk::fs::listing;

/// The entries of a directory as `Getdents` gives them on Linux.
pub(crate) struct Readdir<'a> {
    iter: nix::dir::OwningIter,
    cur: Option<nix::dir::Entry>,
    _fd: std::marker::PhantomData<&'a OwnedFd>,
}

impl<'a> Readdir<'a> {
    pub(crate) fn new(fd: &'a OwnedFd) -> nix::Result<Self> {
        Ok(Readdir {
            iter: listing(fd)?.into_iter(),
            cur: None,
            _fd: std::marker::PhantomData,
        })
    }

    pub(crate) fn next(&mut self) -> Option<nix::Result<(&CStr, Option<bool>)>> {
        match self.iter.next()? {
            Err(err) => Some(Err(err)),
            Ok(entry) => {
                let entry = self.cur.insert(entry);
                let kind = entry.file_type().map(|t| t == nix::dir::Type::Directory);
                Some(Ok((entry.file_name(), kind)))
            }
        }
    }
}
