//! The `tributary` command-line tool: one module per subcommand.
//!
//! Errors are printed as one line on stderr (`error: …`) with exit status 1; usage errors exit
//! with status 2 (clap's convention).

mod chunk;
mod db;
mod devnet;
mod files;
mod node;
mod state;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tributary: a peer-to-peer data synchronization node.
#[derive(Parser)]
#[command(name = "tributary", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work on a state database (an avalanchego-compatible Merkle trie) in a data directory.
    #[command(subcommand)]
    State(state::StateCommand),
    /// Swarm-compatible chunks and file references.
    #[command(subcommand)]
    Chunk(chunk::ChunkCommand),
    /// Store a file in a data directory's chunk store; print its reference.
    Upload(files::UploadArgs),
    /// Write a stored file back out, verifying every chunk.
    Download(files::DownloadArgs),
    /// Run a node on a data directory until Ctrl-C.
    Node(node::NodeArgs),
    /// Run a local network of N nodes on 127.0.0.1 until Ctrl-C.
    Devnet(devnet::DevnetArgs),
    /// Show a running node's Kademlia table.
    Status(status::StatusArgs),
    /// Replicated databases (Syncbase-style) in a data directory.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Syncgroups: which collections are shared with whom.
    #[command(subcommand)]
    Syncgroup(db::SyncgroupCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::State(cmd) => state::run(cmd),
        Command::Chunk(cmd) => chunk::run(cmd),
        Command::Upload(args) => files::upload(&args),
        Command::Download(args) => files::download(&args),
        Command::Node(args) => node::node(&args),
        Command::Devnet(args) => devnet::devnet(&args),
        Command::Status(args) => status::status(&args),
        Command::Db(cmd) => db::run(cmd),
        Command::Syncgroup(cmd) => db::run_syncgroup(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
