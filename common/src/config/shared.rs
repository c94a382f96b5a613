//! The rules across jails: roots and upper dirs that are, hold or share a tree.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;

use super::{Jail, Layer};

/// Rules across jails: one root per jail; no upper dir that is, holds or shares
/// a tree with a jail root or another layer's upper dir (two stacks writing one
/// tree, or a jclean of one emptying the other). Each path is looked up in sorted
/// sets, never compared with every other one.
pub(super) fn shared_paths(jails: &[Jail], layers: &[Layer]) -> Result<(), String> {
    if any_shared(jails) {
        name_shared(jails, layers)
    } else {
        Ok(())
    }
}

/// [`shared_paths`]'s rules one by one, in file order: the first broken one.
pub(super) fn name_shared(jails: &[Jail], layers: &[Layer]) -> Result<(), String> {
    let mut roots: Sorted<usize> = Sorted::default();
    for (position, jail) in jails.iter().enumerate() {
        if let Some(&other) = roots.get(&jail.root) {
            return Err(format!(
                "jail {}: same root as jail {}: {}",
                jail.name,
                jails[other].name,
                jail.root.display()
            ));
        }
        roots.insert(&jail.root, position);
    }
    // The upper dirs checked so far, with their jail and layer.
    let mut seen: Sorted<(usize, usize)> = Sorted::default();
    for (position, jail) in jails.iter().enumerate() {
        for (&layer, upper) in &jail.uppers {
            let path = upper.path(&jail.root);
            let ctx = || {
                format!(
                    "jail {}: layer {}: upper dir {}",
                    jail.name,
                    layers[layer].name,
                    path.display()
                )
            };
            // The first jail in the file whose root is, or lies below, the upper.
            if let Some(&held) = roots.at_or_below(&path).min() {
                return Err(format!(
                    "{} is or holds the root of jail {}",
                    ctx(),
                    jails[held].name
                ));
            }
            // The first upper checked before that is, holds or lies in this one.
            let above = path.ancestors().skip(1).filter_map(|a| seen.get(a));
            if let Some(&(other_jail, other_layer)) = seen.at_or_below(&path).chain(above).min() {
                return Err(format!(
                    "{} is, holds or lies in the upper dir of jail {}: layer {}",
                    ctx(),
                    jails[other_jail].name,
                    layers[other_layer].name
                ));
            }
            seen.insert(&path, (position, layer));
        }
    }
    Ok(())
}

/// Whether any of [`shared_paths`]'s rules is broken, by one sort of every root
/// and upper dir: the common case (none is) costs no tree of paths; a broken
/// rule is then named by [`shared_paths`] itself, in its order.
pub(super) fn any_shared(jails: &[Jail]) -> bool {
    const ROOT: u8 = 0;
    const UPPER: u8 = 1;
    // Each path's bytes with `/` as NUL (which no path holds): sorted, what lies
    // below a path then comes right after it (and its equals), before anything
    // else, as `a/b` sorts before `a-b`.
    let key = |path: &Path, kind: u8| {
        let mut bytes: Vec<u8> = path.as_os_str().as_encoded_bytes().to_vec();
        for byte in &mut bytes {
            if *byte == b'/' {
                *byte = 0;
            }
        }
        (bytes, kind)
    };
    let mut all: Vec<(Vec<u8>, u8)> = Vec::with_capacity(jails.len() * 2);
    for jail in jails {
        all.push(key(&jail.root, ROOT));
        all.extend(
            jail.uppers
                .values()
                .map(|up| key(&up.path(&jail.root), UPPER)),
        );
    }
    all.sort_unstable();
    all.windows(2).any(|pair| {
        let ((first, first_kind), (next, _)) = (&pair[0], &pair[1]);
        // (`/` alone ends in its separator: everything is below it.)
        let below =
            next.starts_with(first) && (first.ends_with(&[0]) || next.get(first.len()) == Some(&0));
        // One path twice (whatever each is), or an upper holding anything; an
        // upper or a root in a root is fine.
        first == next || (below && *first_kind == UPPER)
    })
}

/// Normalised absolute paths (no `.`, `..`, `//` or trailing slash) by their
/// bytes, sorted: what lies strictly below `path` is the range of keys that
/// start with `path/`. Hashed too: a path itself is found without comparing long
/// common prefixes down the tree.
struct Sorted<V> {
    in_order: BTreeMap<Vec<u8>, V>,
    by_hash: HashMap<Vec<u8>, V>,
}

impl<V> Default for Sorted<V> {
    fn default() -> Self {
        Sorted {
            in_order: BTreeMap::new(),
            by_hash: HashMap::new(),
        }
    }
}

impl<V: Copy> Sorted<V> {
    fn insert(&mut self, path: &Path, value: V) {
        let key = path.as_os_str().as_encoded_bytes().to_vec();
        self.by_hash.insert(key.clone(), value);
        self.in_order.insert(key, value);
    }

    fn get(&self, path: &Path) -> Option<&V> {
        self.by_hash.get(path.as_os_str().as_encoded_bytes())
    }

    /// The values of `path` and of every path below it.
    fn at_or_below<'a>(&'a self, path: &Path) -> impl Iterator<Item = &'a V> + 'a {
        let mut prefix = path.as_os_str().as_encoded_bytes().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        let below = self
            .in_order
            .range::<[u8], _>((Bound::Included(&prefix[..]), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v);
        self.get(path).into_iter().chain(below)
    }
}
