//! Files as trees of chunks, as Swarm's hash trie (`bee/pkg/file/pipeline/hashtrie`).
//!
//! A file is cut into 4096-byte leaf chunks; every 128 references on a level are wrapped into
//! an intermediate chunk whose span is the number of file bytes below it. When the input ends,
//! each level's remaining references are wrapped the same way, except that a lone last
//! reference is carried up unchanged (a "dangling" chunk). The address of the top chunk is the
//! file's reference.
//!
//! The [`Splitter`] streams: it holds one partial leaf and at most 127 references per level
//! (tree depth × 4 KiB), whatever the file size, and hashes batches of leaves on a thread per
//! core while it goes on reading and storing ([`crate::hasher`]). The
//! [`Joiner`] streams too: it walks the tree for the byte range asked, fetching and verifying
//! each chunk against its address and each span against the tree's shape.

use std::io::{Read, Write};

use crate::bmt::CHUNK_SIZE;
use crate::hasher::LeafHasher;
use crate::{Address, Chunk, ChunkError};

/// References per intermediate chunk.
pub const BRANCHES: usize = 128;
/// Bytes per reference.
pub const REF_SIZE: usize = 32;
/// Leaves hashed together (spread over the cores) before they enter the tree.
const LEAF_BATCH: usize = 64;

/// An error of the store a splitter writes to or a joiner reads from.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where a splitter puts chunks.
pub trait ChunkSink {
    /// Stores a chunk (storing one twice is allowed).
    ///
    /// # Errors
    /// When the store fails.
    fn put(&mut self, chunk: Chunk) -> Result<(), StoreError>;
}

/// Where a joiner gets chunks.
pub trait ChunkSource {
    /// The wire data of the chunk at `address`, if held. Not trusted: the joiner verifies it.
    ///
    /// # Errors
    /// When the store fails.
    fn get(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError>;
}

/// A sink that only hashes: for computing a reference without storing anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl ChunkSink for Discard {
    fn put(&mut self, _: Chunk) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Errors of splitting and joining files.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading the input or writing the output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The chunk store failed.
    #[error("chunk store: {0}")]
    Store(StoreError),
    /// A chunk of the file is not in the store.
    #[error("chunk {0} is missing")]
    Missing(Address),
    /// A chunk's content does not match its address, or is malformed.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The chunks do not form a well-shaped file tree.
    #[error("chunk {address} does not fit the file tree: {reason}")]
    BadTree {
        /// The chunk.
        address: Address,
        /// What is wrong.
        reason: String,
    },
    /// A byte range outside the file.
    #[error("range {start}..{end} is outside the file of {size} bytes")]
    Range {
        /// First byte asked.
        start: u64,
        /// End (exclusive) asked.
        end: u64,
        /// The file's size.
        size: u64,
    },
}

/// Splits a byte stream into chunks; see the module documentation.
pub struct Splitter<S: ChunkSink> {
    sink: S,
    /// Pending references per level (level 0 holds leaves), each with the span below it.
    levels: Vec<Vec<(Address, u64)>>,
    /// Full leaves waiting to be hashed, and the partial one being filled (the last).
    leaves: Vec<Vec<u8>>,
    size: u64,
    hasher: LeafHasher,
}

impl<S: ChunkSink> Splitter<S> {
    /// A splitter writing to `sink`.
    pub fn new(sink: S) -> Self {
        Self {
            sink,
            levels: Vec::new(),
            leaves: vec![Vec::with_capacity(CHUNK_SIZE)],
            size: 0,
            hasher: LeafHasher::new(),
        }
    }

    /// Bytes consumed so far.
    #[must_use]
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Consumes more of the file.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), FileError> {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let Some(current) = self.leaves.last_mut() else {
                break;
            };
            let take = (CHUNK_SIZE - current.len()).min(data.len());
            current.extend_from_slice(&data[..take]);
            data = &data[take..];
            if current.len() == CHUNK_SIZE {
                if self.leaves.len() == LEAF_BATCH {
                    self.hash_leaves()?;
                }
                self.leaves.push(Vec::with_capacity(CHUNK_SIZE));
            }
        }
        Ok(())
    }

    /// Consumes all of `reader`.
    ///
    /// # Errors
    /// When reading or the sink fails.
    pub fn write_from(&mut self, mut reader: impl Read) -> Result<(), FileError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.write(&buf[..n])?;
        }
    }

    /// Hands the full leaves to the hashing threads, and adds to the tree, in order, every
    /// batch they have finished.
    fn hash_leaves(&mut self) -> Result<(), FileError> {
        let full: Vec<Vec<u8>> = self
            .leaves
            .drain(..)
            .filter(|l| l.len() == CHUNK_SIZE)
            .collect();
        if full.is_empty() {
            return Ok(());
        }
        let ready = self.hasher.submit(full).map_err(hasher_failed)?;
        self.add_hashed(ready)
    }

    fn add_hashed(
        &mut self,
        batches: Vec<Vec<Result<Chunk, ChunkError>>>,
    ) -> Result<(), FileError> {
        for chunk in batches.into_iter().flatten() {
            self.add(0, chunk?)?;
        }
        Ok(())
    }

    /// Stores a chunk and records its reference on `level`, wrapping full levels upward.
    fn add(&mut self, level: usize, chunk: Chunk) -> Result<(), FileError> {
        let entry = (chunk.address(), chunk.span());
        self.sink.put(chunk).map_err(FileError::Store)?;
        self.push(level, entry)
    }

    fn push(&mut self, level: usize, entry: (Address, u64)) -> Result<(), FileError> {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        self.levels[level].push(entry);
        if self.levels[level].len() == BRANCHES {
            self.wrap(level)?;
        }
        Ok(())
    }

    /// Wraps the references on `level` into an intermediate chunk on the level above.
    fn wrap(&mut self, level: usize) -> Result<(), FileError> {
        let refs = std::mem::take(&mut self.levels[level]);
        let span = refs.iter().map(|(_, s)| s).sum();
        let payload: Vec<u8> = refs.iter().flat_map(|(a, _)| a.0).collect();
        self.add(level + 1, Chunk::new(span, &payload)?)
    }

    /// Ends the input; returns the file's reference and the sink.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn finish(mut self) -> Result<(Address, S), FileError> {
        let last = self.leaves.pop().unwrap_or_default();
        self.hash_leaves()?;
        let rest = self.hasher.finish().map_err(hasher_failed)?;
        self.add_hashed(rest)?;
        if !last.is_empty() || self.size == 0 {
            self.add(0, Chunk::new(last.len() as u64, &last)?)?;
        }
        let mut level = 0;
        loop {
            let higher = self.levels.iter().skip(level + 1).any(|l| !l.is_empty());
            match (self.levels.get(level).map_or(0, Vec::len), higher) {
                (1, false) => {
                    let (reference, _) = self.levels[level][0];
                    return Ok((reference, self.sink));
                }
                (0, true) => {}
                (0, false) => {
                    return Err(FileError::Io(std::io::Error::other(
                        "no chunk to reference",
                    )));
                }
                (1, true) => {
                    // A lone last reference is carried up unchanged.
                    let entry = self.levels[level].remove(0);
                    self.push(level + 1, entry)?;
                }
                (_, _) => self.wrap(level)?,
            }
            level += 1;
        }
    }
}

fn hasher_failed(e: crate::hasher::HasherFailed) -> FileError {
    FileError::Io(std::io::Error::other(e))
}

/// The reference of `data`, computed without storing anything.
///
/// # Errors
/// Never in practice (the discarding sink cannot fail); kept for the shared signature.
pub fn reference_of(reader: impl Read) -> Result<Address, FileError> {
    let mut splitter = Splitter::new(Discard);
    splitter.write_from(reader)?;
    Ok(splitter.finish()?.0)
}

/// Streams a file back from its reference; see the module documentation.
pub struct Joiner<'a, S: ChunkSource + ?Sized> {
    source: &'a S,
    root: Chunk,
}

impl<'a, S: ChunkSource + ?Sized> Joiner<'a, S> {
    /// Fetches and verifies the root chunk of `reference`.
    ///
    /// # Errors
    /// [`FileError::Missing`] or a verification error.
    pub fn new(source: &'a S, reference: Address) -> Result<Self, FileError> {
        let root = fetch(source, reference)?;
        Ok(Self { source, root })
    }

    /// The file's size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.root.span()
    }

    /// Writes bytes `start..end` of the file to `out`.
    ///
    /// # Errors
    /// [`FileError::Range`] for a range outside the file; a missing or invalid chunk; i/o.
    pub fn read_range(&self, start: u64, end: u64, out: &mut dyn Write) -> Result<(), FileError> {
        let size = self.size();
        if start > end || end > size {
            return Err(FileError::Range { start, end, size });
        }
        if start < end {
            self.copy(&self.root, 0, start, end, out)?;
        }
        Ok(())
    }

    /// Writes the whole file to `out`.
    ///
    /// # Errors
    /// A missing or invalid chunk; i/o.
    pub fn read_all(&self, out: &mut dyn Write) -> Result<(), FileError> {
        self.read_range(0, self.size(), out)
    }

    /// Copies the part of `chunk`'s subtree (which starts at file offset `at`) inside
    /// `start..end`.
    fn copy(
        &self,
        chunk: &Chunk,
        at: u64,
        start: u64,
        end: u64,
        out: &mut dyn Write,
    ) -> Result<(), FileError> {
        let span = chunk.span();
        let bad = |reason: String| FileError::BadTree {
            address: chunk.address(),
            reason,
        };
        if span <= CHUNK_SIZE as u64 {
            let payload = chunk.payload();
            if payload.len() as u64 != span {
                return Err(bad(format!(
                    "leaf of span {span} holds {} bytes",
                    payload.len()
                )));
            }
            let (from, to) = (
                (start.max(at) - at) as usize,
                (end.min(at + span) - at) as usize,
            );
            out.write_all(&payload[from..to])?;
            return Ok(());
        }
        let refs = chunk.payload();
        let capacity = child_capacity(span);
        let children = span.div_ceil(capacity);
        if !refs.len().is_multiple_of(REF_SIZE) || refs.len() / REF_SIZE != children as usize {
            return Err(bad(format!(
                "span {span} needs {children} references, the chunk holds {} bytes",
                refs.len()
            )));
        }
        for (i, reference) in refs.chunks_exact(REF_SIZE).enumerate() {
            let child_at = at + i as u64 * capacity;
            let child_span = capacity.min(span - i as u64 * capacity);
            if child_at + child_span <= start || child_at >= end {
                continue;
            }
            let address = Address(
                reference
                    .try_into()
                    .map_err(|_| bad("short reference".into()))?,
            );
            let child = fetch(self.source, address)?;
            if child.span() != child_span {
                return Err(bad(format!(
                    "child {i} has span {}, expected {child_span}",
                    child.span()
                )));
            }
            self.copy(&child, child_at, start, end, out)?;
        }
        Ok(())
    }
}

/// How many file bytes each child of a chunk with `span` (more than 4096) covers: the largest
/// 4096·128^k below `span`.
fn child_capacity(span: u64) -> u64 {
    let mut capacity = CHUNK_SIZE as u64;
    while capacity.saturating_mul(BRANCHES as u64) < span {
        capacity *= BRANCHES as u64;
    }
    capacity
}

fn fetch<S: ChunkSource + ?Sized>(source: &S, address: Address) -> Result<Chunk, FileError> {
    let data = source
        .get(&address)
        .map_err(FileError::Store)?
        .ok_or(FileError::Missing(address))?;
    Ok(Chunk::validate(address, data)?)
}
