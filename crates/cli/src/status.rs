//! `tributary status`: a running node's Kademlia table, its store and its pull-sync streams,
//! as text or JSON.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use tributary_node::status::{PullResponse, TopologyResponse};

#[derive(Args)]
pub struct StatusArgs {
    /// The node's HTTP API.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1633")]
    api: String,
    /// Print JSON instead of text: the `/topology` object with `reserve` (`/reserve`) and
    /// `pullsync` (`/pullsync`) added.
    #[arg(long)]
    json: bool,
}

fn fetch(api: &str, path: &str) -> Result<Value> {
    let url = format!("http://{api}{path}");
    let mut response = ureq::get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {url}"))
}

pub fn status(args: &StatusArgs) -> Result<()> {
    let mut topology = fetch(&args.api, "/topology")?;
    let reserve = fetch(&args.api, "/reserve")?;
    let pull = fetch(&args.api, "/pullsync")?;
    if args.json {
        if let Some(object) = topology.as_object_mut() {
            object.insert("reserve".into(), reserve);
            object.insert("pullsync".into(), pull);
        }
        println!("{topology}");
        return Ok(());
    }
    let t: TopologyResponse = serde_json::from_value(topology).context("parsing /topology")?;
    let p: PullResponse = serde_json::from_value(pull).context("parsing /pullsync")?;
    let chunks = reserve["chunks"]
        .as_u64()
        .context("/reserve without chunks")?;
    print!("{}", render(&t)?);
    print!("{}", render_pull(chunks, &p));
    Ok(())
}

/// The store and the streams: a summary line, then one line per stream with chunks behind
/// it or still running.
fn render_pull(chunks: u64, p: &PullResponse) -> String {
    let historical = p.streams.iter().filter(|s| !s.historical_done).count();
    let live = p.streams.iter().filter(|s| s.live_caught_up).count();
    let mut out = format!(
        "chunks stored {chunks}\npull-sync streams {}  historical running {historical}  \
         live caught up {live}\n",
        p.streams.len()
    );
    let shown: Vec<_> = p
        .streams
        .iter()
        .filter(|s| s.cursor > 0 || !s.live_caught_up)
        .collect();
    if !shown.is_empty() {
        out.push_str(
            "peer      bin  historical         live
",
        );
    }
    for s in shown {
        let historical = format!(
            "{}/{}{}",
            s.synced,
            s.cursor,
            if s.historical_done { " done" } else { "" }
        );
        let live = if s.live_caught_up {
            "caught up"
        } else {
            "syncing"
        };
        out.push_str(&format!(
            "{:<8}  {:>3}  {historical:<17}  {live}\n",
            &s.peer[..s.peer.len().min(8)],
            s.bin
        ));
    }
    out
}

/// The table as text: a header line, then one line per bin that has peers.
fn render(t: &TopologyResponse) -> Result<String> {
    let mut out = format!(
        "overlay {}\ndepth {}  connected {}  known {}\n",
        t.base_addr, t.depth, t.connected, t.population
    );
    out.push_str("bin  connected  known\n");
    for i in 0..32 {
        let bin = t
            .bins
            .get(&format!("bin_{i}"))
            .with_context(|| format!("topology without bin_{i}"))?;
        if bin.population > 0 {
            out.push_str(&format!(
                "{i:>3}  {:>9}  {:>5}\n",
                bin.connected, bin.population
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bins_with_peers() {
        let mut bins = serde_json::Map::new();
        for i in 0..32 {
            let (c, p) = if i == 1 { (2, 3) } else { (0, 0) };
            bins.insert(
                format!("bin_{i}"),
                serde_json::json!({"connected": c, "population": p}),
            );
        }
        let t = serde_json::json!({"baseAddr": "ab", "depth": 1, "connected": 2, "population": 3, "bins": bins});
        let t: TopologyResponse = serde_json::from_value(t).expect("a topology");
        assert_eq!(
            render(&t).expect("renders"),
            "overlay ab\ndepth 1  connected 2  known 3\nbin  connected  known\n  1          2      3\n"
        );
        let no_bins: TopologyResponse = serde_json::from_value(
            serde_json::json!({"baseAddr": "ab", "depth": 1, "connected": 2, "population": 3, "bins": {}}),
        )
        .expect("a topology");
        assert!(render(&no_bins).is_err());
    }

    #[test]
    fn renders_streams_with_chunks_or_work() {
        let p: PullResponse = serde_json::from_value(serde_json::json!({"streams": [
            {"peer": "abcdef0123", "bin": 0, "cursor": 10, "synced": 4, "historicalDone": false, "liveCaughtUp": true},
            {"peer": "abcdef0123", "bin": 1, "cursor": 0, "synced": 0, "historicalDone": true, "liveCaughtUp": true},
        ]}))
        .expect("a pull response");
        assert_eq!(
            render_pull(12, &p),
            "chunks stored 12\npull-sync streams 2  historical running 1  live caught up 2\n\
             peer      bin  historical         live\n\
             abcdef01    0  4/10               caught up\n"
        );
    }
}
