//! `tributary db …` and `tributary syncgroup …`: replicated databases in data directories.
//!
//! The data directory's node key (`DIR/identity.json`, created if missing) is the device
//! and the author of every write; its store (`DIR/store`) holds the rows, the log and the
//! syncgroups beside the chunks and the state trie. `db sync` runs one GetDeltas round with
//! another directory as the responder, in this process, verifying every record as if it came
//! from an untrusted peer. Every command exits non-zero with one line for bad input, and
//! leaves the data unchanged then.
//!
//! With `--api HOST:PORT` instead of `--data-dir`, each command acts on a running node
//! through its HTTP API ([`remote`]); `db watch --api` follows the stream until Ctrl-C.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tributary_replica::delta::sync_once;
use tributary_replica::resolve::{Choice, Rule};
use tributary_replica::syncgroup::Spec;
use tributary_replica::{NodeId, Op, Replica, ReplicaConfig, RowState};

mod remote;

/// Where the data is: a data directory, or a running node's HTTP API.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Dir {
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A running node's API (instead of --data-dir).
    #[arg(long, value_name = "HOST:PORT")]
    api: Option<String>,
}

impl Dir {
    /// The data directory (clap's group makes sure one of the two is given).
    fn path(&self) -> Result<&Path> {
        self.data_dir
            .as_deref()
            .context("this command needs --data-dir (or --api for a running node)")
    }
}

/// A row's address.
#[derive(Args)]
pub struct Row {
    /// The database.
    db: String,
    /// The collection.
    collection: String,
    /// The row key.
    key: String,
}

/// `tributary db …`.
#[derive(Subcommand)]
pub enum DbCommand {
    /// Set a row.
    Put {
        #[command(flatten)]
        dir: Dir,
        #[command(flatten)]
        row: Row,
        /// The value (UTF-8 text, or hex with --hex).
        value: String,
        /// The value is hex.
        #[arg(long)]
        hex: bool,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a row's value.
    Get {
        #[command(flatten)]
        dir: Dir,
        #[command(flatten)]
        row: Row,
        /// Print values as hex.
        #[arg(long)]
        hex: bool,
        /// Print {"value", "version", "conflict": [other head values]}.
        #[arg(long)]
        json: bool,
    },
    /// Delete a row.
    Delete {
        #[command(flatten)]
        dir: Dir,
        #[command(flatten)]
        row: Row,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the rows of a collection.
    Scan {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// The collection.
        collection: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Print values as hex.
        #[arg(long)]
        hex: bool,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Apply JSON lines {"op": "put"|"delete", "collection", "key", "value"} atomically.
    Batch {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// The file of JSON lines, or - for standard input.
        file: String,
        /// Values are hex.
        #[arg(long)]
        hex: bool,
    },
    /// Print this directory's node id (the name ACLs use).
    Id {
        #[command(flatten)]
        dir: Dir,
    },
    /// One GetDeltas round with another data directory as the responder.
    Sync {
        #[command(flatten)]
        dir: Dir,
        /// The responder's data directory.
        #[arg(long, value_name = "SRCDIR")]
        from: PathBuf,
        /// The database.
        db: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List unresolved conflicts (rules app and defer), grouped by batch closure.
    Conflicts {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// Print values as hex.
        #[arg(long)]
        hex: bool,
        /// Print a JSON array of groups.
        #[arg(long)]
        json: bool,
    },
    /// Resolve a row's conflict.
    Resolve {
        #[command(flatten)]
        dir: Dir,
        #[command(flatten)]
        row: Row,
        /// Keep this node's head (local) or the one that arrived (remote).
        #[arg(
            long,
            value_name = "local|remote",
            required_unless_present = "value",
            conflicts_with = "value"
        )]
        pick: Option<String>,
        /// Write this value instead.
        #[arg(long)]
        value: Option<String>,
        /// The value is hex.
        #[arg(long)]
        hex: bool,
    },
    /// Conflict rules per collection and key prefix.
    Rules {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Print the changes after a marker, one JSON object a line.
    Watch {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// Resume after this marker (default: from the start of the feed).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many changes (default: 1,000 from a data directory; with --api, follow
        /// the stream until Ctrl-C).
        #[arg(long)]
        limit: Option<usize>,
        /// Print values as hex.
        #[arg(long)]
        hex: bool,
        /// One JSON object per line (the only format).
        #[arg(long)]
        json: bool,
    },
}

impl DbCommand {
    /// The API address, if the command is for a running node.
    fn api(&self) -> Option<String> {
        let (Self::Put { dir, .. }
        | Self::Get { dir, .. }
        | Self::Delete { dir, .. }
        | Self::Scan { dir, .. }
        | Self::Batch { dir, .. }
        | Self::Id { dir }
        | Self::Sync { dir, .. }
        | Self::Conflicts { dir, .. }
        | Self::Resolve { dir, .. }
        | Self::Rules { dir, .. }
        | Self::Watch { dir, .. }) = self;
        dir.api.clone()
    }
}

/// `tributary db rules …`.
#[derive(Subcommand)]
pub enum RulesAction {
    /// Set the rule for COLLECTION/KEYPREFIX (`notes/` is all of collection notes).
    Set {
        /// COLLECTION/KEYPREFIX.
        target: String,
        /// lww, app or defer.
        rule: String,
    },
    /// List the rules.
    List,
}

/// `tributary syncgroup …`.
#[derive(Subcommand)]
pub enum SyncgroupCommand {
    /// Create a syncgroup (this node is its admin).
    Create {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// The syncgroup's name.
        name: String,
        /// The collections it shares, separated by commas.
        #[arg(long, value_delimiter = ',', required = true)]
        collections: Vec<String>,
        /// Node ids that may read, separated by commas.
        #[arg(long, value_delimiter = ',')]
        readers: Vec<String>,
        /// Node ids that may write.
        #[arg(long, value_delimiter = ',')]
        writers: Vec<String>,
        /// Node ids that may administer (besides this node).
        #[arg(long, value_delimiter = ',')]
        admins: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Join a syncgroup through an admin's data directory.
    Join {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// The syncgroup's name.
        name: String,
        /// The admin's data directory (with --data-dir).
        #[arg(
            long,
            value_name = "ADMINDIR",
            required_unless_present = "admin",
            conflicts_with = "admin"
        )]
        admin_dir: Option<PathBuf>,
        /// The admin's multiaddr (ending in /p2p/PEER) or node id (with --api).
        #[arg(long, value_name = "MULTIADDR")]
        admin: Option<String>,
    },
    /// Leave a syncgroup (the data stays).
    Leave {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// The syncgroup's name.
        name: String,
    },
    /// As an admin, eject a member.
    Eject {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// The syncgroup's name.
        name: String,
        /// The member's node id.
        #[arg(long, value_name = "ID")]
        member: String,
    },
    /// Show a syncgroup's spec, members and knowledge (with --api: also each member's last
    /// sync).
    Members {
        #[command(flatten)]
        dir: Dir,
        /// The database.
        db: String,
        /// The syncgroup's name.
        name: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Opens the replica of a data directory; `create` allows a new directory.
fn open(dir: &Path, create: bool) -> Result<Replica> {
    if !create {
        ensure!(dir.is_dir(), "no data directory {}", dir.display());
        ensure!(
            dir.join(tributary_node::identity::IDENTITY_FILE).is_file(),
            "{} is not a data directory (no {})",
            dir.display(),
            tributary_node::identity::IDENTITY_FILE
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let identity = tributary_node::identity::load_or_create(dir)?;
    let store = tributary_node::open_store(dir)?;
    Ok(Replica::open(
        store,
        identity.identity,
        ReplicaConfig::default(),
    )?)
}

fn value_arg(value: &str, hex: bool) -> Result<Vec<u8>> {
    if hex {
        hex::decode(value.strip_prefix("0x").unwrap_or(value)).context("the value is not hex")
    } else {
        Ok(value.as_bytes().to_vec())
    }
}

fn show(value: &[u8], hex: bool) -> Result<String> {
    if hex {
        return Ok(hex::encode(value));
    }
    String::from_utf8(value.to_vec()).context("the value is not UTF-8 text; use --hex")
}

fn show_opt(value: Option<&Vec<u8>>, hex: bool) -> Result<Value> {
    value.map_or(Ok(Value::Null), |v| show(v, hex).map(Value::String))
}

fn row_json(state: &RowState, hex: bool) -> Result<Value> {
    let conflict = state
        .conflict
        .iter()
        .map(|v| show_opt(v.as_ref(), hex))
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "value": show_opt(state.value.as_ref(), hex)?,
        "version": hex::encode(state.version.0),
        "conflict": conflict,
    }))
}

/// Checks names before a command that may create the data directory, so that bad input
/// creates nothing.
fn check_names(db: &str, collections: &[&str]) -> Result<()> {
    tributary_replica::types::check_name("database", db)?;
    for c in collections {
        tributary_replica::types::check_new_collection(c)?;
    }
    Ok(())
}

/// Runs a `db` command.
pub fn run(cmd: DbCommand) -> Result<()> {
    if let Some(api) = cmd.api() {
        return remote::run_db(&api, cmd);
    }
    match cmd {
        DbCommand::Put {
            dir,
            row:
                Row {
                    db,
                    collection,
                    key,
                },
            value,
            hex,
            json,
        } => {
            let value = value_arg(&value, hex)?;
            let version = {
                check_names(&db, &[&collection])?;
                tributary_replica::types::check_row(&key, &value)?;
                open(dir.path()?, true)?.put(now_ms(), &db, &collection, &key, &value)?
            };
            print_version(version, json);
        }
        DbCommand::Delete {
            dir,
            row:
                Row {
                    db,
                    collection,
                    key,
                },
            json,
        } => {
            let mut r = open(dir.path()?, false)?;
            if r.get(&db, &collection, &key)?.is_none() {
                bail!("no row {collection}/{key} in database {db}");
            }
            let version = r.delete(now_ms(), &db, &collection, &key)?;
            print_version(version, json);
        }
        DbCommand::Get {
            dir,
            row:
                Row {
                    db,
                    collection,
                    key,
                },
            hex,
            json,
        } => {
            let r = open(dir.path()?, false)?;
            let Some(state) = r.get(&db, &collection, &key)? else {
                bail!("no row {collection}/{key} in database {db}");
            };
            if json {
                println!("{}", row_json(&state, hex)?);
            } else {
                println!(
                    "{}",
                    show_opt(state.value.as_ref(), hex)?
                        .as_str()
                        .unwrap_or("(deleted)")
                );
                if !state.conflict.is_empty() {
                    eprintln!(
                        "note: in conflict with {} other head(s); see `tributary db conflicts`",
                        state.conflict.len()
                    );
                }
            }
        }
        DbCommand::Scan {
            dir,
            db,
            collection,
            prefix,
            hex,
            json,
        } => scan(&dir, &db, &collection, &prefix, hex, json)?,
        DbCommand::Batch { dir, db, file, hex } => batch(&dir, &db, &file, hex)?,
        DbCommand::Id { dir } => println!("{}", open(dir.path()?, true)?.id()),
        DbCommand::Sync {
            dir,
            from,
            db,
            json,
        } => sync(&dir, &from, &db, json)?,
        DbCommand::Conflicts { dir, db, hex, json } => conflicts(&dir, &db, hex, json)?,
        DbCommand::Resolve {
            dir,
            row:
                Row {
                    db,
                    collection,
                    key,
                },
            pick,
            value,
            hex,
        } => {
            let choice = match (pick.as_deref(), value) {
                (Some("local"), None) => Choice::Local,
                (Some("remote"), None) => Choice::Remote,
                (Some(other), None) => bail!("--pick takes local or remote, not {other:?}"),
                (_, Some(v)) => Choice::Value(Some(value_arg(&v, hex)?)),
                (None, None) => bail!("give --pick local|remote or --value V"),
            };
            open(dir.path()?, false)?.resolve(now_ms(), &db, &[(collection, key, choice)])?;
        }
        DbCommand::Rules { dir, db, action } => rules(&dir, &db, action)?,
        DbCommand::Watch {
            dir,
            db,
            from,
            limit,
            hex,
            json: _,
        } => {
            let r = open(dir.path()?, false)?;
            for e in r.watch(&db, from, limit.unwrap_or(1000))? {
                let value = if e.deleted {
                    Value::Null
                } else {
                    Value::String(show(&e.value, hex)?)
                };
                println!(
                    "{}",
                    json!({
                        "marker": e.seq.to_string(),
                        "collection": e.collection,
                        "key": e.key,
                        "value": value,
                        "deleted": e.deleted,
                        "version": hex::encode(&e.version),
                        "from_sync": e.from_sync,
                        "conflict": e.conflict,
                    })
                );
            }
        }
    }
    Ok(())
}

fn print_version(version: tributary_replica::Version, json: bool) {
    if json {
        println!("{}", json!({ "version": hex::encode(version.0) }));
    } else {
        println!("{}", hex::encode(version.0));
    }
}

fn scan(dir: &Dir, db: &str, collection: &str, prefix: &str, hex: bool, json: bool) -> Result<()> {
    let r = open(dir.path()?, false)?;
    let rows = r.scan(db, collection, prefix)?;
    if json {
        let items = rows
            .iter()
            .map(|(k, s)| {
                let mut v = row_json(s, hex)?;
                v["key"] = Value::String(k.clone());
                Ok(v)
            })
            .collect::<Result<Vec<_>>>()?;
        println!("{}", Value::Array(items));
    } else {
        for (k, s) in &rows {
            let value = show_opt(s.value.as_ref(), hex)?;
            println!("{k}\t{}", value.as_str().unwrap_or("(deleted)"));
        }
    }
    Ok(())
}

/// The text of a batch file, or of standard input for `-`.
fn read_input(file: &str) -> Result<String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    }
    Ok(text)
}

fn batch(dir: &Dir, db: &str, file: &str, hex: bool) -> Result<()> {
    let text = read_input(file)?;
    let mut ops = Vec::new();
    for (n, line) in text.as_bytes().lines().enumerate() {
        let line = line.context("reading the batch")?;
        if line.trim().is_empty() {
            continue;
        }
        ops.push(parse_op(&line, hex).with_context(|| format!("line {}", n + 1))?);
    }
    ensure!(!ops.is_empty(), "the batch is empty");
    let collections: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            Op::Put { collection, .. } | Op::Delete { collection, .. } => collection.as_str(),
        })
        .collect();
    check_names(db, &collections)?;
    let versions = open(dir.path()?, true)?.batch(now_ms(), db, &ops)?;
    println!("{} rows written atomically", versions.len());
    Ok(())
}

fn parse_op(line: &str, hex: bool) -> Result<Op> {
    let v: Value = serde_json::from_str(line).context("not a JSON object")?;
    let field = |name: &str| -> Result<String> {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("no string field {name:?}"))
    };
    let (collection, key) = (field("collection")?, field("key")?);
    match field("op")?.as_str() {
        "put" => Ok(Op::Put {
            collection,
            key,
            value: value_arg(&field("value")?, hex)?,
        }),
        "delete" => Ok(Op::Delete { collection, key }),
        other => bail!("op {other:?} is neither put nor delete"),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn sync(dir: &Dir, from: &Path, db: &str, json: bool) -> Result<()> {
    ensure!(
        !same_dir(dir.path()?, from),
        "a directory cannot sync with itself"
    );
    let source = open(from, false).context("the responder")?;
    let mut target = open(dir.path()?, false)?;
    let report = sync_once(&mut target, &source, now_ms(), db)?;
    let a = &report.applied;
    let refused: Vec<String> = a
        .refused
        .iter()
        .map(|(_, g, why)| format!("gen {g}: {why}"))
        .collect();
    if json {
        println!(
            "{}",
            json!({
                "frames": report.frames, "bytes": report.bytes, "records": a.records,
                "new": a.new, "duplicates": a.duplicates, "conflicts": a.conflicts,
                "resolved": a.resolved, "refused": refused,
            })
        );
    } else {
        println!(
            "{} records received ({} new, {} already held) in {} frames, {} bytes; {} conflicts found, {} resolved by last-writer-wins",
            a.records, a.new, a.duplicates, report.frames, report.bytes, a.conflicts, a.resolved
        );
        for r in &refused {
            println!("refused {r}");
        }
    }
    ensure!(
        refused.is_empty(),
        "{} records from {} were refused",
        refused.len(),
        from.display()
    );
    Ok(())
}

fn conflicts(dir: &Dir, db: &str, hex: bool, json: bool) -> Result<()> {
    let r = open(dir.path()?, false)?;
    let groups = r.conflicts(db)?;
    let values = |vs: &[Option<Vec<u8>>]| {
        vs.iter()
            .map(|v| show_opt(v.as_ref(), hex))
            .collect::<Result<Vec<_>>>()
    };
    let mut out = Vec::new();
    for group in &groups {
        let mut rows = Vec::new();
        for c in group {
            let ancestor = match &c.ancestor {
                Some(v) => show_opt(v.as_ref(), hex)?,
                None => Value::Null,
            };
            rows.push(json!({
                "collection": c.row.collection, "key": c.row.key, "rule": c.rule.name(),
                "local": values(&c.local)?, "remote": values(&c.remote)?, "ancestor": ancestor,
            }));
        }
        out.push(Value::Array(rows));
    }
    print_conflicts(&Value::Array(out), json);
    Ok(())
}

/// Prints conflict groups (a JSON array of arrays of rows) as JSON or one line a row.
fn print_conflicts(groups: &Value, json: bool) {
    if json {
        println!("{groups}");
        return;
    }
    let groups = groups.as_array().map_or(&[][..], Vec::as_slice);
    if groups.is_empty() {
        println!("no conflicts");
    }
    for (i, group) in groups.iter().enumerate() {
        println!("group {}:", i + 1);
        for row in group.as_array().into_iter().flatten() {
            println!(
                "  {}/{} ({}): local {} remote {}",
                row["collection"].as_str().unwrap_or(""),
                row["key"].as_str().unwrap_or(""),
                row["rule"].as_str().unwrap_or(""),
                row["local"],
                row["remote"]
            );
        }
    }
}

fn rules(dir: &Dir, db: &str, action: RulesAction) -> Result<()> {
    match action {
        RulesAction::Set { target, rule } => {
            let (collection, prefix) = target.split_once('/').with_context(|| {
                format!("{target:?} is not COLLECTION/KEYPREFIX (e.g. notes/ or notes/draft-)")
            })?;
            let rule: Rule = rule.parse().map_err(anyhow::Error::msg)?;
            check_names(db, &[collection])?;
            open(dir.path()?, true)?.set_rule(db, collection, prefix, rule)?;
        }
        RulesAction::List => {
            for (collection, prefix, rule) in open(dir.path()?, false)?.rules(db)? {
                println!("{collection}/{prefix}\t{}", rule.name());
            }
        }
    }
    Ok(())
}

fn ids(list: &[String]) -> Result<Vec<NodeId>> {
    list.iter()
        .filter(|s| !s.is_empty())
        .map(|s| Ok(NodeId::parse(s.trim())?))
        .collect()
}

/// Runs a `syncgroup` command.
pub fn run_syncgroup(cmd: SyncgroupCommand) -> Result<()> {
    if let Some(api) = cmd.api() {
        return remote::run_syncgroup(&api, cmd);
    }
    match cmd {
        SyncgroupCommand::Create {
            dir,
            db,
            name,
            collections,
            readers,
            writers,
            admins,
            description,
        } => {
            let spec = Spec {
                name,
                description,
                collections,
                readers: ids(&readers)?,
                writers: ids(&writers)?,
                admins: ids(&admins)?,
            };
            check_names(
                &db,
                &spec
                    .collections
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )?;
            tributary_replica::types::check_name("syncgroup", &spec.name)?;
            open(dir.path()?, true)?.create_syncgroup(now_ms(), &db, spec)?;
        }
        SyncgroupCommand::Join {
            dir,
            db,
            name,
            admin_dir,
            admin: _,
        } => {
            let admin_dir =
                admin_dir.context("--admin needs --api; with --data-dir give --admin-dir")?;
            ensure!(
                !same_dir(dir.path()?, &admin_dir),
                "a directory cannot join through itself"
            );
            let mut admin = open(&admin_dir, false).context("the admin")?;
            check_names(&db, &[])?;
            let mut joiner = open(dir.path()?, true)?;
            // Refused before the admin writes the joiner in, so that no phantom member stays.
            let member = joiner.syncgroup(&db, &name).ok().is_some_and(|info| {
                info.members.iter().any(|(id, st)| {
                    *id == joiner.id() && *st == tributary_replica::syncgroup::MemberState::Joined
                })
            });
            ensure!(
                !member,
                "{} is already a member of syncgroup {name}",
                dir.path()?.display()
            );
            let grant = admin.admin_join(now_ms(), &db, &name, joiner.id())?;
            joiner.accept_join(&grant)?;
            println!("joined {name}; sync with a member before writing into its collections");
        }
        SyncgroupCommand::Leave { dir, db, name } => {
            open(dir.path()?, false)?.leave_syncgroup(now_ms(), &db, &name)?;
        }
        SyncgroupCommand::Eject {
            dir,
            db,
            name,
            member,
        } => {
            open(dir.path()?, false)?.eject(now_ms(), &db, &name, NodeId::parse(&member)?)?;
        }
        SyncgroupCommand::Members {
            dir,
            db,
            name,
            json,
        } => members(&dir, &db, &name, json)?,
    }
    Ok(())
}

impl SyncgroupCommand {
    /// The API address, if the command is for a running node.
    fn api(&self) -> Option<String> {
        let (Self::Create { dir, .. }
        | Self::Join { dir, .. }
        | Self::Leave { dir, .. }
        | Self::Eject { dir, .. }
        | Self::Members { dir, .. }) = self;
        dir.api.clone()
    }
}

fn members(dir: &Dir, db: &str, name: &str, json: bool) -> Result<()> {
    let info = open(dir.path()?, false)?.syncgroup(db, name)?;
    let list = |ids: &[NodeId]| ids.iter().map(ToString::to_string).collect::<Vec<_>>();
    let knowledge = |k: &tributary_replica::syncgroup::Knowledge| {
        k.iter()
            .map(|(d, g)| (d.to_string(), json!(g)))
            .collect::<serde_json::Map<_, _>>()
    };
    let members: Vec<Value> = info
        .members
        .iter()
        .map(|(id, st)| json!({ "id": id.to_string(), "state": st.name(), "knowledge": info.member_knowledge.get(id).map(knowledge) }))
        .collect();
    if json {
        println!(
            "{}",
            json!({
                "name": info.spec.name, "description": info.spec.description, "version": info.version,
                "collections": info.spec.collections, "readers": list(&info.spec.readers),
                "writers": list(&info.spec.writers), "admins": list(&info.spec.admins),
                "members": members, "knowledge": knowledge(&info.knowledge), "pending": info.pending,
            })
        );
    } else {
        println!(
            "{} (version {}): collections {}",
            info.spec.name,
            info.version,
            info.spec.collections.join(",")
        );
        for (id, st) in &info.members {
            let role = if info.spec.is_admin(id) {
                "admin"
            } else if info.spec.may_write(id) {
                "writer"
            } else if info.spec.may_read(id) {
                "reader"
            } else {
                "no access"
            };
            println!("  {id}  {}  {role}", st.name());
        }
        if info.pending {
            println!("pending: not yet synced up to the admin's checkpoint");
        }
    }
    Ok(())
}
