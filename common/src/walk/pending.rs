//! The walk's pending entries: one shared byte buffer of records `KIND name
//! NUL`, each frame's from its own offset on, popped from the end.

use std::ffi::{CStr, CString};

/// Kinds of a pending entry: the first byte of its record.
pub(super) const PENDING_DIR: u8 = b'd';
pub(super) const PENDING_FILE: u8 = b'f';
pub(super) const PENDING_WHITEOUT: u8 = b'w';

/// Append the pending entry `name` of kind `kind` to `todo`.
pub(super) fn push_pending(todo: &mut Vec<u8>, kind: u8, name: &CStr) {
    todo.push(kind);
    todo.extend_from_slice(name.to_bytes_with_nul());
}

/// The last pending entry at or above `floor` in `todo`, taken off it: its kind
/// and name.
pub(super) fn pop_name(todo: &mut Vec<u8>, floor: usize) -> Option<(u8, CString)> {
    if todo.len() <= floor {
        return None;
    }
    let end = todo.len() - 1;
    // The kind byte is never NUL: the record starts after the previous NUL.
    let start = todo[floor..end]
        .iter()
        .rposition(|&b| b == 0)
        .map_or(floor, |i| floor + i + 1);
    let rec = (todo[start], CString::new(&todo[start + 1..end]).ok());
    todo.truncate(start);
    Some((rec.0, rec.1?))
}

/// Sort the records of `todo` from `from` on by name, the last name first: popped
/// from the end, they come out in byte order. Costs two words a record while it
/// sorts, and a copy of the records.
pub(super) fn sort_pending(todo: &mut Vec<u8>, from: usize) {
    let mut recs: Vec<(usize, usize)> = Vec::new();
    let mut start = from;
    for (index, &byte) in todo.iter().enumerate().skip(from) {
        if byte == 0 {
            recs.push((start, index));
            start = index + 1;
        }
    }
    if recs.len() < 2 {
        return;
    }
    let name = |r: &(usize, usize)| &todo[r.0 + 1..r.1];
    recs.sort_unstable_by(|a, b| name(b).cmp(name(a)));
    let mut sorted = Vec::with_capacity(todo.len() - from);
    for &(start, nul) in &recs {
        sorted.extend_from_slice(&todo[start..=nul]);
    }
    drop(recs);
    todo.truncate(from);
    todo.extend_from_slice(&sorted);
}

/// The subdirectories pending in `todo` of a walk out of path order, where only
/// subdirectories pend.
pub(super) fn dir_names(todo: &[u8]) -> Vec<&CStr> {
    todo.split_inclusive(|&b| b == 0)
        .filter_map(|n| CStr::from_bytes_with_nul(n.get(1..)?).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(todo: &mut Vec<u8>, floor: usize) -> Option<(u8, Vec<u8>)> {
        pop_name(todo, floor).map(|(k, n)| (k, n.into_bytes()))
    }

    #[test]
    fn pending_names_pop_in_reverse_within_their_frame() {
        let mut todo = b"da\0fbc\0".to_vec();
        let floor = todo.len();
        todo.extend_from_slice(b"wd\0def\0");
        assert_eq!(pop(&mut todo, floor), Some((b'd', b"ef".to_vec())));
        assert_eq!(pop(&mut todo, floor), Some((b'w', b"d".to_vec())));
        assert!(pop_name(&mut todo, floor).is_none());
        assert_eq!(pop(&mut todo, 0), Some((b'f', b"bc".to_vec())));
        assert_eq!(pop(&mut todo, 0), Some((b'd', b"a".to_vec())));
        assert!(todo.is_empty());
    }

    /// Sorted by name bytes whatever the kind, only within their frame.
    #[test]
    fn pending_names_sort_by_name_within_their_frame() {
        let mut todo = b"dzz\0".to_vec();
        let floor = todo.len();
        for (kind, name) in [
            (b'f', "m"),
            (b'd', "a"),
            (b'w', "a-b"),
            (b'f', "\x01"),
            (b'd', "b"),
        ] {
            push_pending(&mut todo, kind, &CString::new(name).unwrap());
        }
        sort_pending(&mut todo, floor);
        let mut got = Vec::new();
        while let Some((kind, name)) = pop(&mut todo, floor) {
            got.push((kind, String::from_utf8(name).unwrap()));
        }
        let want = [
            (b'f', "\x01"),
            (b'd', "a"),
            (b'w', "a-b"),
            (b'd', "b"),
            (b'f', "m"),
        ];
        let want: Vec<(u8, String)> = want.iter().map(|(k, n)| (*k, n.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!(todo, b"dzz\0");
    }
}
