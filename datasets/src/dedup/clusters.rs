//! Clusters of duplicates as a union-find over document positions. Only documents that matched
//! another are stored, so memory follows the duplicates, not the corpus. The smallest position
//! becomes each cluster's root: the document kept is the first one the corpus holds.

use std::collections::HashMap;

/// A union-find forest over the documents that have a duplicate.
#[derive(Debug, Default)]
pub struct Clusters {
    parent: HashMap<u64, u64>,
}

impl Clusters {
    /// The root of `doc`'s cluster (itself when it is in none), halving the path on the way.
    pub fn root(&mut self, doc: u64) -> u64 {
        let mut x = doc;
        while let Some(&p) = self.parent.get(&x) {
            if p == x {
                break;
            }
            let grand = self.parent.get(&p).copied().unwrap_or(p);
            self.parent.insert(x, grand);
            x = grand;
        }
        x
    }

    /// Puts `a` and `b` in one cluster; the smaller root stays the root.
    pub fn join(&mut self, a: u64, b: u64) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra == rb {
            return;
        }
        let (keep, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent.entry(keep).or_insert(keep);
        self.parent.insert(child, keep);
    }

    /// Every cluster of two or more documents: its root and its other members, all sorted.
    pub fn groups(&mut self) -> Vec<(u64, Vec<u64>)> {
        let docs: Vec<u64> = self.parent.keys().copied().collect();
        let mut groups: HashMap<u64, Vec<u64>> = HashMap::new();
        for doc in docs {
            let root = self.root(doc);
            if root != doc {
                groups.entry(root).or_default().push(doc);
            }
        }
        let mut groups: Vec<(u64, Vec<u64>)> = groups.into_iter().collect();
        for (_, members) in &mut groups {
            members.sort_unstable();
        }
        groups.sort_unstable_by_key(|(root, _)| *root);
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_are_transitive_and_the_smallest_document_is_kept() {
        let mut c = Clusters::default();
        c.join(5, 9);
        c.join(9, 2);
        c.join(7, 8);
        c.join(8, 7);
        assert_eq!(c.root(9), 2);
        assert_eq!(c.root(3), 3);
        assert_eq!(c.groups(), vec![(2, vec![5, 9]), (7, vec![8])]);
    }
}
