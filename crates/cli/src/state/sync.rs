//! `tributary state sync`: brings one state database to a root held by another, through the
//! x/sync protocol in one process. The destination runs the real client (every proof verified
//! as if from an untrusted peer, committed as it arrives); the source answers with the real
//! server. It exercises and measures the whole sync path without a network, and resumes:
//! interrupt it and run it again, and it continues from what was committed.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tributary_merkle::to_hex;
use tributary_statesync::client::{Client, ClientConfig};
use tributary_statesync::server::{self, MAX_KEY_LIMIT, Reply};

use super::{DbArg, open, open_existing, parse_root};

#[derive(Args)]
pub struct SyncArgs {
    /// Destination data directory (a new state database is created if there is none).
    #[command(flatten)]
    db: DbArg,
    /// Source data directory, holding the target root.
    #[arg(long, value_name = "DIR")]
    from: std::path::PathBuf,
    /// The target root, in hex (default: the source's current root); must be in the source's
    /// history.
    #[arg(long, value_name = "HEX")]
    root: Option<String>,
    /// Print the summary as JSON on stdout instead of the root.
    #[arg(long)]
    json: bool,
    /// Most keys per proof, 1 to 2048.
    #[arg(long, default_value_t = MAX_KEY_LIMIT, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_KEY_LIMIT)))]
    key_limit: u32,
}

pub fn sync(args: &SyncArgs) -> Result<()> {
    let source = open_existing(&DbArg {
        db: args.from.clone(),
    })?;
    let target = match &args.root {
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
    let config = ClientConfig {
        key_limit: args.key_limit,
        ..ClientConfig::default()
    };
    let mut client = Client::new(dest, target, vec!["source"], config)?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").context("progress template")?,
    );
    let started = Instant::now();
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
        let stats = client.stats();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{} keys, {:.1} MiB ({:.1} MiB/s), {} ranges left",
            stats.keys,
            mib(stats.bytes),
            mib(stats.bytes) / secs,
            client.ranges_left()
        ));
        bar.tick();
    }
    bar.finish_and_clear();
    let stats = client.stats();
    let secs = started.elapsed().as_secs_f64();
    let root = to_hex(&client.db().root());
    if args.json {
        let summary = serde_json::json!({
            "root": root,
            "proofs": stats.succeeded,
            "keys": stats.keys,
            "bytes": stats.bytes,
            "seconds": secs,
        });
        println!("{summary}");
    } else {
        eprintln!(
            "synced: {} proofs, {} keys, {:.1} MiB in {secs:.2} s ({:.1} MiB/s)",
            stats.succeeded,
            stats.keys,
            mib(stats.bytes),
            mib(stats.bytes) / secs.max(1e-9),
        );
        println!("{root}");
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}
