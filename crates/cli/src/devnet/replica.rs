//! The devnet's replicated-database demo: node 0 creates syncgroup `demo/devnet` sharing
//! collection `clock` with every full node as a writer, the others join through node 0's
//! listen address, and each node writes `clock/node-<i>` (its wall-clock time in ms) every
//! [`WRITE_EVERY`] (each write brings a round from every other member, so 16 nodes writing
//! every second is 240 rounds a second already). The periodic line's replica lag is the most stale copy of any member's
//! latest write: the largest, over members `j` and `i ≠ j`, of node `j`'s own value minus
//! the value node `i` holds of it (read at nearly the same moment), so 0 ms means every
//! member has every member's latest write.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

/// The demo database and syncgroup.
pub const DB: &str = "demo";
const SYNCGROUP: &str = "devnet";
/// How often each node writes its clock row.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn call(method: &str, api: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
    let url = format!("http://{api}{path}");
    let mut response = match method {
        "PUT" => agent().put(&url).send(body),
        "POST" => agent().post(&url).send(body),
        _ => agent().get(&url).call(),
    }
    .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Ok((status, text))
}

fn ok(method: &str, api: &str, path: &str, body: &[u8]) -> Result<String> {
    let (status, text) = call(method, api, path, body)?;
    ensure!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    Ok(text)
}

/// Creates the syncgroup on node 0 and has every other node join it (blocking).
///
/// # Errors
/// When a node refuses.
pub fn setup(apis: &[String], infos: &[Value]) -> Result<()> {
    let ids: Vec<&str> = infos
        .iter()
        .filter_map(|i| i["ethereum"].as_str())
        .collect();
    let spec = json!({
        "db": DB, "name": SYNCGROUP, "description": "the devnet's demo",
        "collections": ["clock"], "writers": ids,
    });
    let first = apis.first().context("no node")?;
    ok("POST", first, "/syncgroups", spec.to_string().as_bytes())?;
    let admin = infos[0]["listen"][0]
        .as_str()
        .context("node 0 has no listen address")?;
    let join = json!({ "admin": admin }).to_string();
    for (i, api) in apis.iter().enumerate().skip(1) {
        ok(
            "POST",
            api,
            &format!("/syncgroups/{DB}/{SYNCGROUP}/join"),
            join.as_bytes(),
        )
        .with_context(|| format!("node {i} joining"))?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes every node's clock row once (blocking); a node that refuses is skipped.
pub fn write_clocks(apis: &[String]) {
    for (i, api) in apis.iter().enumerate() {
        let path = format!("/db/{DB}/clock/node-{i}");
        let _ = call("PUT", api, &path, now_ms().to_string().as_bytes());
    }
}

fn clock_of(api: &str, i: usize) -> Option<u64> {
    let (status, text) = call("GET", api, &format!("/db/{DB}/clock/node-{i}"), b"").ok()?;
    (status == 200).then(|| text.parse().ok()).flatten()
}

/// The replica lag in ms (see the module documentation) and how many copies of members'
/// rows have not arrived at all yet.
#[must_use]
pub fn lag(apis: &[String]) -> (u64, usize) {
    let mut worst = 0;
    let mut missing = 0;
    for (j, own_api) in apis.iter().enumerate() {
        let Some(own) = clock_of(own_api, j) else {
            continue; // j has not written yet
        };
        for (i, api) in apis.iter().enumerate() {
            if i == j {
                continue;
            }
            match clock_of(api, j) {
                Some(seen) => worst = worst.max(own.saturating_sub(seen)),
                None => missing += 1,
            }
        }
    }
    (worst, missing)
}
