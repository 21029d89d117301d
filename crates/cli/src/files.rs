//! `tributary upload` and `tributary download`: files into and out of a data directory's chunk
//! store (the node's HTTP API route, `--api`, comes with the node runtime).
//!
//! Bins are relative to the node's overlay address; until a node has run on the directory,
//! chunks are indexed relative to the zero address, and the node re-indexes them when it first
//! opens the store with its own overlay.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use clap::Args;
use tributary_chunk::Address;
use tributary_chunk::file::{Joiner, Splitter};
use tributary_chunk::store::{Batched, ChunkStore};
use tributary_store::{Durability, FjallStore};

use crate::chunk::progress;

/// Chunks per durable write while uploading.
const UPLOAD_BATCH: usize = 512;

#[derive(Args)]
pub struct UploadArgs {
    /// The file to upload, or - for stdin.
    file: String,
    /// Data directory holding the chunk store (created if missing).
    #[arg(long, value_name = "DIR")]
    db: PathBuf,
    /// Print a JSON object instead of the bare reference.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DownloadArgs {
    /// The file's reference (64 hex characters).
    reference: String,
    /// Where to write the file.
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// Data directory holding the chunk store.
    #[arg(long, value_name = "DIR")]
    db: PathBuf,
    /// Print a JSON object when done.
    #[arg(long)]
    json: bool,
}

fn open_store(dir: &Path) -> Result<ChunkStore> {
    let context = || format!("opening the chunk store in {}", dir.display());
    let store = FjallStore::open(&dir.join("store"), Durability::Sync).with_context(context)?;
    ChunkStore::open(Arc::new(store), Address::default()).with_context(context)
}

pub fn upload(args: &UploadArgs) -> Result<()> {
    fs::create_dir_all(&args.db).with_context(|| format!("creating {}", args.db.display()))?;
    let store = open_store(&args.db)?;
    let (reader, len): (Box<dyn io::Read>, Option<u64>) = if args.file == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(&args.file).with_context(|| format!("opening {}", args.file))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let bar = progress(len);
    let mut splitter = Splitter::new(Batched::new(&store, UPLOAD_BATCH));
    splitter
        .write_from(bar.wrap_read(reader))
        .with_context(|| format!("uploading {}", args.file))?;
    let size = splitter.size();
    let (reference, mut sink) = splitter.finish()?;
    let stored = sink.flush()?;
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "reference": reference.to_string(), "bytes": size, "chunks_stored": stored })
        );
    } else {
        println!("{reference}");
    }
    Ok(())
}

pub fn download(args: &DownloadArgs) -> Result<()> {
    let reference: Address = args.reference.parse()?;
    ensure!(
        args.db.join("store").is_dir(),
        "no chunk store in {}",
        args.db.display()
    );
    let store = open_store(&args.db)?;
    let joiner = Joiner::new(&store, reference)?;
    // Write beside the target and rename at the end: a failed download leaves no partial file.
    let partial = args.out.with_extension("partial");
    let bar = progress(Some(joiner.size()));
    let result = (|| -> Result<()> {
        let mut out = BufWriter::new(
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?,
        );
        joiner.read_all(&mut bar.wrap_write(&mut out))?;
        out.flush()?;
        fs::rename(&partial, &args.out).with_context(|| format!("writing {}", args.out.display()))
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "reference": reference.to_string(), "bytes": joiner.size(), "path": args.out })
        );
    }
    Ok(())
}
