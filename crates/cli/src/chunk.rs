//! `tributary chunk …`: Swarm chunks and file references, no node needed.

use std::fs::File;
use std::io::{self, IsTerminal, Read};

use anyhow::{Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tributary_chunk::file::{Discard, Splitter};

#[derive(Subcommand)]
pub enum ChunkCommand {
    /// Print the Swarm reference of a file (or - for stdin), as `POST /bytes` would return.
    Hash {
        /// The file, or - for stdin.
        file: String,
    },
}

pub fn run(cmd: ChunkCommand) -> Result<()> {
    match cmd {
        ChunkCommand::Hash { file } => hash(&file),
    }
}

fn hash(file: &str) -> Result<()> {
    let (reader, len): (Box<dyn Read>, Option<u64>) = if file == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(file).with_context(|| format!("opening {file}"))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let bar = progress(len);
    let mut splitter = Splitter::new(Discard);
    splitter
        .write_from(bar.wrap_read(reader))
        .with_context(|| format!("reading {file}"))?;
    let (reference, _) = splitter.finish()?;
    bar.finish_and_clear();
    println!("{reference}");
    Ok(())
}

/// A byte progress bar on stderr when it is a terminal (hidden otherwise).
pub fn progress(len: Option<u64>) -> ProgressBar {
    let bar = len.map_or_else(ProgressBar::no_length, ProgressBar::new);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}
