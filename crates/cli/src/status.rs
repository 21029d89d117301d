//! `tributary status`: a running node's Kademlia table, as text or JSON.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

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
    let topology: Value = serde_json::from_str(&text).with_context(|| format!("parsing {url}"))?;
    if args.json {
        println!("{topology}");
        return Ok(());
    }
    print!("{}", render(&topology)?);
    Ok(())
}

/// The table as text: a header line, then one line per bin that has peers.
fn render(t: &Value) -> Result<String> {
    let field = |v: &Value, name: &str| -> Result<u64> {
        v.get(name)
            .and_then(Value::as_u64)
            .with_context(|| format!("topology without {name}"))
    };
    let Some(base) = t.get("baseAddr").and_then(Value::as_str) else {
        bail!("topology without baseAddr");
    };
    let mut out = format!(
        "overlay {base}\ndepth {}  connected {}  known {}\n",
        field(t, "depth")?,
        field(t, "connected")?,
        field(t, "population")?
    );
    out.push_str("bin  connected  known\n");
    for i in 0..32 {
        let bin = t
            .get("bins")
            .and_then(|b| b.get(format!("bin_{i}")))
            .with_context(|| format!("topology without bin_{i}"))?;
        let (connected, population) = (field(bin, "connected")?, field(bin, "population")?);
        if population > 0 {
            out.push_str(&format!("{i:>3}  {connected:>9}  {population:>5}\n"));
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
        assert_eq!(
            render(&t).expect("renders"),
            "overlay ab\ndepth 1  connected 2  known 3\nbin  connected  known\n  1          2      3\n"
        );
        assert!(render(&serde_json::json!({})).is_err());
    }
}
