//! Random access to the bytes of one file — how weights are read without holding a file whole: the page reads
//! `File`s with `File.slice`, the CLI reads memory maps, tests read byte slices.

use crate::error::{Error, Result};

/// Random access to the bytes of one file.
pub trait ByteRanges {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// `len` bytes from `offset`.
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

/// A reference to ranges is ranges.
impl<T: ByteRanges + ?Sized> ByteRanges for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        (**self).read(offset, len)
    }
}

/// Bytes in memory (or memory-mapped) as ranges.
impl ByteRanges for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        start
            .checked_add(len)
            .and_then(|end| self.get(start..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Invalid(format!("read of {len} bytes at {offset} past the end")))
    }
}
