//! `tributary status`: a running node's Kademlia table, as text or JSON.

use anyhow::{Context, Result};
use clap::Args;
use tributary_node::status::TopologyResponse;

#[derive(Args)]
pub struct StatusArgs {
    /// The node's HTTP API.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1633")]
    api: String,
    /// Print the `/topology` JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn status(args: &StatusArgs) -> Result<()> {
    let url = format!("http://{}/topology", args.api);
    let mut response = ureq::get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    if args.json {
        println!("{}", text.trim());
        return Ok(());
    }
    let topology: TopologyResponse =
        serde_json::from_str(&text).with_context(|| format!("parsing {url}"))?;
    print!("{}", render(&topology)?);
    Ok(())
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
}
