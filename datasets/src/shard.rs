//! Shards: one of `N` interleaved parts of a corpus, so that `N` processes (a Slurm array, a
//! Kubernetes indexed job) can run a stage side by side. Document `d` (its 0-based position in
//! the corpus) belongs to shard `d mod N`: interleaving needs no count of the corpus up front,
//! and spreads long and short documents evenly.

use std::fmt;
use std::str::FromStr;

use crate::error::{DataError, Result};
use crate::reader::{Corpus, OnMalformed, ReadReport};

/// Shard `index` of `count` (written `index/count` on command lines, 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// How many shards the corpus is cut into.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl Shard {
    /// The whole corpus as one shard.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// Shard `index` of `count`, checked.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(DataError::Invalid(format!(
                "shard {index}/{count}: the index must be below the count, and the count at least 1"
            )));
        }
        Ok(Self { index, count })
    }

    /// Whether the document at `position` belongs to this shard.
    pub fn contains(&self, position: u64) -> bool {
        position % self.count as u64 == self.index as u64
    }

    /// A file-name part naming the shard (`shard-00002-of-00008`), the same on every machine.
    pub fn file_stem(&self) -> String {
        format!("shard-{:05}-of-{:05}", self.index, self.count)
    }

    /// Documents of `corpus` in this shard (a reading pass: what progress bars count against).
    pub fn count_documents(&self, corpus: &Corpus) -> Result<u64> {
        let mut count = 0;
        self.read(corpus, OnMalformed::Fail, &mut |_, _| {
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }

    /// Calls `sink(position, text)` for each document of `corpus` in this shard, in order.
    pub fn read(
        &self,
        corpus: &Corpus,
        on_malformed: OnMalformed,
        sink: &mut dyn FnMut(u64, String) -> Result<()>,
    ) -> Result<ReadReport> {
        let mut report = ReadReport::default();
        let mut position = 0u64;
        corpus.read(on_malformed, &mut report, &mut |text| {
            let here = position;
            position += 1;
            if self.contains(here) {
                sink(here, text)
            } else {
                Ok(())
            }
        })?;
        Ok(report)
    }
}

impl FromStr for Shard {
    type Err = DataError;

    /// `i/N`, as on the command line.
    fn from_str(text: &str) -> Result<Self> {
        let parse = |part: &str| part.trim().parse::<usize>().ok();
        match text.split_once('/').map(|(i, n)| (parse(i), parse(n))) {
            Some((Some(index), Some(count))) => Self::new(index, count),
            _ => Err(DataError::Invalid(format!(
                "shard {text:?}: expected INDEX/COUNT, such as 0/8"
            ))),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
