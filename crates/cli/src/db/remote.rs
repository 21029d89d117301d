//! `tributary db … --api HOST:PORT` and `tributary syncgroup … --api HOST:PORT`: the same
//! commands against a running node's HTTP API (`tributary_node::db_api`). Output follows the
//! data-directory forms; `--json` prints the node's JSON. Path segments are percent-encoded,
//! so any key reaches its row.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::{DbCommand, RulesAction, SyncgroupCommand, check_names, ids, value_arg};

/// How long one API call may take (a join waits for its admin up to 80 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// Percent-encodes one path segment (everything but RFC 3986's unreserved characters).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Rows asked for per scan page.
const SCAN_PAGE: usize = 1000;

struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(addr: &str, timeout: Option<Duration>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            agent,
        }
    }

    /// Sends a request; the body of a 2xx answer, or the node's error message.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>> {
        Ok(self.call_paged(method, path, body)?.0)
    }

    /// As [`Api::call`], and whether the answer says more follows (a scan page).
    fn call_paged(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(Vec<u8>, bool)> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("PUT", Some(b)) => self.agent.put(&url).send(b),
            ("POST", Some(b)) => self.agent.post(&url).send(b),
            ("POST", None) => self.agent.post(&url).send_empty(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        };
        let mut response = result.with_context(|| format!("cannot reach the node at {url}"))?;
        let status = response.status().as_u16();
        let more = response
            .headers()
            .get(tributary_node::db_api::MORE_HEADER)
            .is_some_and(|v| v.as_bytes() == b"true");
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .with_context(|| format!("reading {url}"))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("the node answered {status}: {message}");
        }
        Ok((bytes, more))
    }

    /// Every row of a scan, page by page (each page printed by `each` as it comes).
    fn scan(&self, path: &str, mut each: impl FnMut(&Value) -> Result<()>) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page_path = match &after {
                Some(key) => format!("{path}&after={}", segment(key)),
                None => path.to_string(),
            };
            let (bytes, more) = self.call_paged("GET", &page_path, None)?;
            let rows: Value =
                serde_json::from_slice(&bytes).context("the node's answer is not JSON")?;
            let rows = rows.as_array().context("the node's scan is not a list")?;
            for row in rows {
                each(row)?;
            }
            let last = rows.last().and_then(|r| r["key"].as_str());
            match (more, last) {
                (true, Some(key)) => after = Some(key.to_string()),
                _ => return Ok(()),
            }
        }
    }

    fn json(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Value> {
        let bytes = self.call(method, path, body)?;
        serde_json::from_slice(&bytes).context("the node's answer is not JSON")
    }
}

fn row_path(db: &str, collection: &str, key: &str) -> String {
    format!(
        "/db/{}/{}/{}",
        segment(db),
        segment(collection),
        segment(key)
    )
}

/// A JSON value's text, or its hex (`value` or `value_hex`), as the data-directory forms
/// print it.
fn shown(v: &Value, hex: bool) -> Result<String> {
    if let Some(text) = v["value"].as_str() {
        return Ok(if hex {
            hex::encode(text.as_bytes())
        } else {
            text.to_string()
        });
    }
    match v["value_hex"].as_str() {
        Some(h) if hex => Ok(h.to_string()),
        Some(_) => bail!("the value is not UTF-8 text; use --hex"),
        None => Ok("(deleted)".into()),
    }
}

/// Runs a `db` command against the node at `addr`.
pub fn run_db(addr: &str, cmd: DbCommand) -> Result<()> {
    let api = Api::new(addr, Some(CALL_TIMEOUT));
    match cmd {
        DbCommand::Put {
            row,
            value,
            hex,
            json,
            ..
        } => {
            check_names(&row.db, &[&row.collection])?;
            let value = value_arg(&value, hex)?;
            let v = api.json(
                "PUT",
                &row_path(&row.db, &row.collection, &row.key),
                Some(&value),
            )?;
            print_version(&v, json);
        }
        DbCommand::Delete { row, json, .. } => {
            let v = api.json(
                "DELETE",
                &row_path(&row.db, &row.collection, &row.key),
                None,
            )?;
            print_version(&v, json);
        }
        DbCommand::Get { row, hex, json, .. } => {
            let path = format!("{}?meta=true", row_path(&row.db, &row.collection, &row.key));
            let v = api.json("GET", &path, None)?;
            if json {
                println!("{v}");
            } else {
                println!("{}", shown(&v, hex)?);
                let others = v["conflict"].as_array().map_or(0, Vec::len);
                if others > 0 {
                    eprintln!(
                        "note: in conflict with {others} other head(s); see `tributary db conflicts`"
                    );
                }
            }
        }
        DbCommand::Scan {
            db,
            collection,
            prefix,
            hex,
            json,
            ..
        } => {
            let path = format!(
                "/db/{}/{}?prefix={}&limit={SCAN_PAGE}",
                segment(&db),
                segment(&collection),
                segment(&prefix)
            );
            if json {
                let mut rows = Vec::new();
                api.scan(&path, |row| {
                    rows.push(row.clone());
                    Ok(())
                })?;
                println!("{}", Value::Array(rows));
            } else {
                api.scan(&path, |row| {
                    let key = row["key"].as_str().unwrap_or("");
                    println!("{key}\t{}", shown(row, hex)?);
                    Ok(())
                })?;
            }
        }
        DbCommand::Batch { db, file, hex, .. } => batch(&api, &db, &file, hex)?,
        DbCommand::Id { .. } => {
            let v = api.json("GET", "/node", None)?;
            println!("{}", v["ethereum"].as_str().context("no node id")?);
        }
        DbCommand::Sync { .. } => {
            bail!("a running node syncs by itself; `db sync --from` is for data directories")
        }
        DbCommand::Conflicts { db, json, .. } => {
            let v = api.json("GET", &format!("/db/{}/conflicts", segment(&db)), None)?;
            super::print_conflicts(&v, json);
        }
        DbCommand::Resolve {
            row,
            pick,
            value,
            hex,
            ..
        } => {
            let mut answer = json!({ "collection": row.collection, "key": row.key });
            match (pick.as_deref(), value) {
                (Some(side @ ("local" | "remote")), None) => answer["choice"] = json!(side),
                (Some(other), None) => bail!("--pick takes local or remote, not {other:?}"),
                (_, Some(v)) => {
                    answer["choice"] = json!("value");
                    answer["value_hex"] = json!(hex::encode(value_arg(&v, hex)?));
                }
                (None, None) => bail!("give --pick local|remote or --value V"),
            }
            let body = Value::Array(vec![answer]).to_string();
            let path = format!("/db/{}/conflicts/resolve", segment(&row.db));
            api.json("POST", &path, Some(body.as_bytes()))?;
        }
        DbCommand::Rules { db, action, .. } => rules(&api, &db, action)?,
        DbCommand::Watch {
            db,
            from,
            limit,
            hex,
            ..
        } => watch(addr, &db, from, limit, hex)?,
    }
    Ok(())
}

fn print_version(v: &Value, json: bool) {
    if json {
        println!("{v}");
    } else {
        println!("{}", v["version"].as_str().unwrap_or(""));
    }
}

/// Sends a batch file as the API's JSON lines (with `--hex`, `value` fields are hex and go as
/// `value_hex`).
fn batch(api: &Api, db: &str, file: &str, hex: bool) -> Result<()> {
    let text = super::read_input(file)?;
    let mut body = String::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut v: Value = serde_json::from_str(line)
            .with_context(|| format!("line {}: not a JSON object", n + 1))?;
        if hex && let Some(value) = v.get("value").cloned() {
            v["value_hex"] = value;
            if let Some(o) = v.as_object_mut() {
                o.remove("value");
            }
        }
        body.push_str(&v.to_string());
        body.push('\n');
    }
    ensure!(!body.is_empty(), "the batch is empty");
    let v = api.json(
        "POST",
        &format!("/db/{}/batch", segment(db)),
        Some(body.as_bytes()),
    )?;
    println!("{} rows written atomically", v["rows"]);
    Ok(())
}

fn rules(api: &Api, db: &str, action: RulesAction) -> Result<()> {
    let path = format!("/db/{}/rules", segment(db));
    match action {
        RulesAction::Set { target, rule } => {
            let (collection, prefix) = target.split_once('/').with_context(|| {
                format!("{target:?} is not COLLECTION/KEYPREFIX (e.g. notes/ or notes/draft-)")
            })?;
            let body = json!({ "collection": collection, "prefix": prefix, "rule": rule });
            api.json("PUT", &path, Some(body.to_string().as_bytes()))?;
        }
        RulesAction::List => {
            for r in api
                .json("GET", &path, None)?
                .as_array()
                .into_iter()
                .flatten()
            {
                println!(
                    "{}/{}\t{}",
                    r["collection"].as_str().unwrap_or(""),
                    r["prefix"].as_str().unwrap_or(""),
                    r["rule"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// Follows the node's watch stream, printing each change as one JSON line, until `limit`
/// changes (if given), the stream ends, or Ctrl-C (which ends the process).
fn watch(addr: &str, db: &str, from: u64, limit: Option<usize>, hex: bool) -> Result<()> {
    // No overall timeout: the stream stays open; the node sends a blank line when idle.
    let api = Api::new(addr, None);
    let url = format!("{}/db/{}/watch?from={from}", api.base, segment(db));
    let response = api
        .agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot reach the node at {url}"))?;
    let status = response.status().as_u16();
    if status != 200 {
        let mut body = response.into_body();
        let text = body.read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        bail!("the node answered {status}: {message}");
    }
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    let mut printed = 0;
    for line in reader.lines() {
        let line = line.context("the watch stream broke")?;
        if line.trim().is_empty() {
            continue;
        }
        let mut v: Value = serde_json::from_str(&line).context("a watch line is not JSON")?;
        if v.get("code").is_some() {
            bail!(
                "{}",
                v["message"].as_str().unwrap_or("the watch stream failed")
            );
        }
        // As the data-directory form: "value" is the text (or hex with --hex), null if
        // deleted.
        let value = match (v["value"].as_str(), v["value_hex"].as_str()) {
            (Some(text), _) if hex => json!(hex::encode(text.as_bytes())),
            (Some(text), _) => json!(text),
            (None, Some(h)) if hex => json!(h),
            (None, Some(_)) => bail!("a value is not UTF-8 text; use --hex"),
            (None, None) => Value::Null,
        };
        if let Some(o) = v.as_object_mut() {
            o.remove("value_hex");
        }
        v["value"] = value;
        v["marker"] = json!(v["marker"].to_string());
        println!("{v}");
        printed += 1;
        if limit.is_some_and(|l| printed >= l) {
            break;
        }
    }
    Ok(())
}

/// Runs a `syncgroup` command against the node at `addr`.
pub fn run_syncgroup(addr: &str, cmd: SyncgroupCommand) -> Result<()> {
    let api = Api::new(addr, Some(CALL_TIMEOUT));
    let sg = |db: &str, name: &str, what: &str| {
        format!("/syncgroups/{}/{}{what}", segment(db), segment(name))
    };
    match cmd {
        SyncgroupCommand::Create {
            db,
            name,
            collections,
            readers,
            writers,
            admins,
            description,
            ..
        } => {
            let list = |l: &[String]| -> Result<Vec<String>> {
                Ok(ids(l)?.iter().map(ToString::to_string).collect())
            };
            let body = json!({
                "db": db, "name": name, "description": description, "collections": collections,
                "readers": list(&readers)?, "writers": list(&writers)?, "admins": list(&admins)?,
            });
            api.json("POST", "/syncgroups", Some(body.to_string().as_bytes()))?;
        }
        SyncgroupCommand::Join {
            db, name, admin, ..
        } => {
            let admin = admin.context("with --api, give the admin as --admin MULTIADDR")?;
            let body = json!({ "admin": admin }).to_string();
            api.json("POST", &sg(&db, &name, "/join"), Some(body.as_bytes()))?;
            println!("joined {name}; the node syncs it with its members");
        }
        SyncgroupCommand::Leave { db, name, .. } => {
            api.json("POST", &sg(&db, &name, "/leave"), None)?;
        }
        SyncgroupCommand::Eject {
            db, name, member, ..
        } => {
            let body = json!({ "member": member }).to_string();
            api.json("POST", &sg(&db, &name, "/eject"), Some(body.as_bytes()))?;
        }
        SyncgroupCommand::Members { db, name, json, .. } => {
            let v = api.json("GET", &sg(&db, &name, ""), None)?;
            if json {
                println!("{v}");
            } else {
                print_members(&v);
            }
        }
    }
    Ok(())
}

fn print_members(v: &Value) {
    let spec = &v["spec"];
    let names = |l: &Value| {
        l.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{} (version {}): collections {}",
        spec["name"].as_str().unwrap_or(""),
        spec["version"],
        names(&spec["collections"])
    );
    for m in v["members"].as_array().into_iter().flatten() {
        let last = m["last_sync_ms"]
            .as_u64()
            .map(|t| format!("  last sync at {t} ms"))
            .unwrap_or_default();
        println!(
            "  {}  {}{last}",
            m["id"].as_str().unwrap_or(""),
            m["state"].as_str().unwrap_or("")
        );
    }
    if v["pending"] == true {
        println!("pending: not yet synced up to the admin's checkpoint");
    }
}
