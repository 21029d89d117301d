//! `tributary state sync`: brings a state database to a target root with the x/sync client,
//! every proof verified as if from an untrusted peer and committed as it arrives.
//!
//! - `--peer MULTIADDR…` syncs from running nodes over libp2p (`/tributary/statesync/1`).
//! - `--from DIR` syncs from another data directory in this process (the real server
//!   answers): it exercises and measures the whole sync path without a network.
//!
//! Either way it resumes: interrupt it (Ctrl-C, kill -9) and run it again, and it goes on from
//! what was committed.

use std::hash::Hash as StdHash;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::Multiaddr;
use tributary_merkle::{Hash, to_hex};
use tributary_node::sync_client::{PeerSyncConfig, sync_from_peers};
use tributary_statesync::client::{Client, ClientConfig};
use tributary_statesync::server::{self, MAX_KEY_LIMIT, Reply};

use super::{DbArg, open, open_existing, parse_root};

#[derive(Args)]
pub struct SyncArgs {
    /// Destination data directory (a new state database is created if there is none).
    #[command(flatten)]
    db: DbArg,
    /// A node to sync from (repeatable), e.g. /ip4/127.0.0.1/tcp/1634/p2p/16Uiu2….
    #[arg(long, value_name = "MULTIADDR", required_unless_present = "from")]
    peer: Vec<Multiaddr>,
    /// Instead of peers: a source data directory in this process, holding the target root.
    #[arg(long, value_name = "DIR", conflicts_with = "peer")]
    from: Option<std::path::PathBuf>,
    /// The target root, in hex. Required with --peer; with --from it defaults to the source's
    /// current root and must be in the source's history.
    #[arg(long, value_name = "HEX", required_unless_present = "from")]
    root: Option<String>,
    /// Requests in flight at once (x/sync SimultaneousWorkLimit), 1 to 16 (a node serves at
    /// most 16 state-sync requests at once, and takes at most 16 streams per connection).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=16))]
    work_limit: u32,
    /// Most keys per proof, 1 to 2048.
    #[arg(long, default_value_t = MAX_KEY_LIMIT, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_KEY_LIMIT)))]
    key_limit: u32,
    /// Branch factor of a new destination database (2, 4, 16 or 256) with --peer; it must be
    /// the peers' (a mismatch is detected and named). With --from the source's is used.
    #[arg(long, value_parser = super::parse_branch_factor_arg)]
    branch_factor: Option<usize>,
    /// The peers' network id.
    #[arg(long, value_name = "N", default_value_t = 1)]
    network_id: u64,
    /// Print the summary as JSON on stdout instead of the root.
    #[arg(long)]
    json: bool,
}

pub fn sync(args: &SyncArgs) -> Result<()> {
    let config = ClientConfig {
        key_limit: args.key_limit,
        work_limit: usize::try_from(args.work_limit)?,
        ..ClientConfig::default()
    };
    match &args.from {
        Some(from) => sync_from_dir(args, from, config),
        None => sync_from_network(args, config),
    }
}

fn sync_from_network(args: &SyncArgs, config: ClientConfig) -> Result<()> {
    let root = args
        .root
        .as_deref()
        .context("--root is required with --peer")?;
    let target = parse_root("--root", root)?;
    let dest = open(&args.db, args.branch_factor)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let progress = Progress::new()?;
    let sync = PeerSyncConfig {
        peers: args.peer.clone(),
        target,
        client: config,
        network_id: args.network_id,
    };
    let reported = std::cell::Cell::new(0u32);
    let client = runtime
        .block_on(sync_from_peers(dest, sync, |c| {
            progress.show(c);
            report_penalties(&progress, c, &reported);
        }))
        .context("state sync")?;
    progress.finish();
    for (peer, n) in client.penalties() {
        eprintln!("penalized {peer}: {n} invalid answers");
    }
    if let Some(why) = client.last_rejection() {
        eprintln!("the last invalid answer: {}", error_chain(why));
    }
    summary(args.json, &client, progress.started)
}

fn sync_from_dir(args: &SyncArgs, from: &std::path::Path, config: ClientConfig) -> Result<()> {
    let source = open_existing(&DbArg {
        db: from.to_path_buf(),
    })?;
    let target: Hash = match &args.root {
        Some(r) => parse_root("--root", r)?,
        None => source.root(),
    };
    ensure!(
        source.history().iter().any(|(_, root)| *root == target),
        "the source does not hold root {} in its history",
        to_hex(&target)
    );
    let arity = Some(source.branch_factor().arity());
    let dest =
        open(&args.db, arity).context("the destination must have the source's branch factor")?;
    let mut client = Client::new(dest, target, vec!["source"], config)?;
    let progress = Progress::new()?;
    while !client.is_done()? {
        let Some(request) = client.poll_request(Instant::now()) else {
            bail!("the source gave no usable answer; nothing more can be done");
        };
        let answer = match server::handle(&source, &request.bytes)? {
            Reply::Bytes(answer) => answer,
            Reply::Drop => bail!("the source does not hold root {}", to_hex(&target)),
        };
        client.handle_response(Instant::now(), request.id, &answer)?;
        if !client.penalties().is_empty() {
            bail!("the source sent a proof that does not verify");
        }
        progress.show(&client);
    }
    progress.finish();
    summary(args.json, &client, progress.started)
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Says so as soon as a peer is penalized (not only in the summary), so an interrupted sync
/// shows it too; `reported` is the number of invalid answers said so far.
fn report_penalties<P: Clone + Eq + StdHash>(
    progress: &Progress,
    client: &Client<P>,
    reported: &std::cell::Cell<u32>,
) {
    let total: u32 = client.penalties().values().sum();
    if total > reported.get() {
        reported.set(total);
        progress.bar.suspend(|| {
            eprintln!("a peer was penalized: {total} invalid answers so far");
        });
    }
}

/// The progress line: keys, MiB, rate, ranges left.
struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    fn new() -> Result<Self> {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .context("progress template")?,
        );
        Ok(Self {
            bar,
            started: Instant::now(),
        })
    }

    fn show<P: Clone + Eq + StdHash>(&self, client: &Client<P>) {
        let stats = client.stats();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_message(format!(
            "{} keys, {:.1} MiB ({:.1} MiB/s), {} ranges left",
            stats.keys,
            mib(stats.bytes),
            mib(stats.bytes) / secs,
            client.ranges_left()
        ));
        self.bar.tick();
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn summary<P: Clone + Eq + StdHash>(
    json: bool,
    client: &Client<P>,
    started: Instant,
) -> Result<()> {
    let stats = client.stats();
    let secs = started.elapsed().as_secs_f64();
    let root = to_hex(&client.db().root());
    if json {
        let summary = serde_json::json!({
            "root": root,
            "proofs": stats.succeeded,
            "requests": stats.requests,
            "failed": stats.failed,
            "rejected": stats.rejected,
            "rejected_by": client.rejections(),
            "keys": stats.keys,
            "bytes": stats.bytes,
            "seconds": secs,
        });
        println!("{summary}");
    } else {
        eprintln!(
            "synced: {} proofs, {} keys, {:.1} MiB in {secs:.2} s ({:.1} MiB/s); {} requests failed, {} answers rejected",
            stats.succeeded,
            stats.keys,
            mib(stats.bytes),
            mib(stats.bytes) / secs.max(1e-9),
            stats.failed,
            stats.rejected,
        );
        println!("{root}");
    }
    Ok(())
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a MiB figure for people to read"
)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}
