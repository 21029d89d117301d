//! `tributary state …`: import, read, write, prove and verify over a data directory, no node
//! needed.
//!
//! The trie lives in the fjall database `DIR/store` (the node uses the same path, so a node
//! started on `DIR` serves what `state import` wrote). `import` creates the database; every
//! other command refuses a directory without one, so a typo never creates an empty database.
//! Input is validated in full before anything is written: a bad line, hex string or proof file
//! leaves the database as it was.

use std::fs;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tributary_merkle::{
    BatchOp, BranchFactor, ChangeProof, Config, EMPTY_ROOT, Hash, MerkleDb, RangeProof, parse_hash,
    to_hex,
};
use tributary_store::{Durability, FjallStore};

mod sync;

/// Default and largest key limit of a proof, as x/sync's `maxKeyValuesLimit`.
const DEFAULT_PROOF_LIMIT: usize = 2048;

#[derive(Subcommand)]
pub enum StateCommand {
    /// Import key-value pairs ("KEYHEX VALUEHEX" per line) and print the new root.
    Import(ImportArgs),
    /// Print the current root (64 hex characters).
    Root(DbArg),
    /// Print the value of a key, in hex.
    Get {
        #[command(flatten)]
        db: DbArg,
        /// The key, in hex (may be empty: "").
        key: String,
    },
    /// Set a key to a value and print the new root.
    Put {
        #[command(flatten)]
        db: DbArg,
        /// The key, in hex.
        key: String,
        /// The value, in hex (may be empty: "").
        value: String,
    },
    /// Delete a key and print the new root.
    Delete {
        #[command(flatten)]
        db: DbArg,
        /// The key, in hex.
        key: String,
    },
    /// Write a range proof (protobuf `RangeProof`) to stdout or --out.
    RangeProof(RangeProofArgs),
    /// Verify a range proof file; print the number of key-values it proves.
    VerifyRangeProof(VerifyRangeArgs),
    /// Write a change proof (protobuf `ChangeProof`) to stdout or --out.
    ChangeProof(ChangeProofArgs),
    /// Verify a change proof file against the database (which must hold the start root's state
    /// in the proof's range); print the number of key changes it proves.
    VerifyChangeProof(VerifyChangeArgs),
    /// Bring this database to a root held by another one (--from) through the state-sync
    /// client and server, verifying every proof; print the new root.
    Sync(sync::SyncArgs),
}

#[derive(Args)]
pub struct DbArg {
    /// Data directory holding the state database.
    #[arg(long, value_name = "DIR")]
    db: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    db: DbArg,
    /// Branch factor of a new database (2, 4, 16 or 256); an existing one keeps its own, and
    /// naming a different one is an error.
    #[arg(long, value_parser = parse_branch_factor_arg)]
    branch_factor: Option<usize>,
    /// Commit every N pairs (each commit is one revision).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Input file, or - for stdin.
    file: String,
}

#[derive(Args)]
pub struct Bounds {
    /// First key of the range, in hex (default: unbounded).
    #[arg(long, value_name = "HEX")]
    start: Option<String>,
    /// Last key of the range, in hex (default: unbounded).
    #[arg(long, value_name = "HEX")]
    end: Option<String>,
}

#[derive(Args)]
pub struct ProofOutput {
    /// Most key-values (or key changes) in the proof, 1 to 2048.
    #[arg(long, default_value_t = DEFAULT_PROOF_LIMIT)]
    limit: usize,
    /// Write the proof here instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

impl ProofOutput {
    fn limit(&self) -> Result<usize> {
        ensure!(
            (1..=DEFAULT_PROOF_LIMIT).contains(&self.limit),
            "--limit must be between 1 and {DEFAULT_PROOF_LIMIT}"
        );
        Ok(self.limit)
    }

    fn write(&self, bytes: &[u8]) -> Result<()> {
        match &self.out {
            Some(path) => {
                fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
            }
            None => {
                let mut stdout = io::stdout().lock();
                ensure!(
                    !stdout.is_terminal(),
                    "refusing to write a binary proof to a terminal: redirect stdout or use --out"
                );
                stdout.write_all(bytes)?;
                Ok(stdout.flush()?)
            }
        }
    }
}

#[derive(Args)]
pub struct RangeProofArgs {
    #[command(flatten)]
    db: DbArg,
    /// Root to prove against (default: the current root); must be in history.
    #[arg(long, value_name = "HEX")]
    root: Option<String>,
    #[command(flatten)]
    bounds: Bounds,
    #[command(flatten)]
    output: ProofOutput,
}

#[derive(Args)]
pub struct VerifyRangeArgs {
    /// The root the proof must prove.
    #[arg(long, value_name = "HEX")]
    root: String,
    #[command(flatten)]
    bounds: Bounds,
    /// Branch factor of the trie (2, 4, 16 or 256).
    #[arg(long, default_value_t = 16, value_parser = parse_branch_factor_arg)]
    branch_factor: usize,
    /// The proof file.
    proof: PathBuf,
}

#[derive(Args)]
pub struct ChangeProofArgs {
    #[command(flatten)]
    db: DbArg,
    /// Root the changes start from.
    #[arg(long, value_name = "HEX")]
    from_root: String,
    /// Root the changes lead to.
    #[arg(long, value_name = "HEX")]
    to_root: String,
    #[command(flatten)]
    bounds: Bounds,
    #[command(flatten)]
    output: ProofOutput,
}

#[derive(Args)]
pub struct VerifyChangeArgs {
    #[command(flatten)]
    db: DbArg,
    /// The root the changes lead to.
    #[arg(long, alias = "to-root", value_name = "HEX")]
    root: String,
    #[command(flatten)]
    bounds: Bounds,
    /// The proof file.
    proof: PathBuf,
}

fn parse_branch_factor_arg(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    BranchFactor::from_arity(n)
        .map(|_| n)
        .ok_or_else(|| format!("branch factor must be 2, 4, 16 or 256, not {n}"))
}

fn branch_factor(arity: usize) -> BranchFactor {
    // clap's value parser accepted only valid arities.
    BranchFactor::from_arity(arity).unwrap_or_default()
}

pub fn run(cmd: StateCommand) -> Result<()> {
    match cmd {
        StateCommand::Import(args) => import(&args),
        StateCommand::Root(db) => {
            println!("{}", to_hex(&open_existing(&db)?.root()));
            Ok(())
        }
        StateCommand::Get { db, key } => {
            let key = parse_hex("key", &key)?;
            match open_existing(&db)?.get(&key)? {
                Some(value) => {
                    println!("{}", hex::encode(value));
                    Ok(())
                }
                None => bail!("key {} not found", hex::encode(&key)),
            }
        }
        StateCommand::Put { db, key, value } => {
            let op = BatchOp::Put(parse_hex("key", &key)?, parse_hex("value", &value)?);
            print_root(open_existing(&db)?.commit([op])?)
        }
        StateCommand::Delete { db, key } => {
            let op = BatchOp::Delete(parse_hex("key", &key)?);
            print_root(open_existing(&db)?.commit([op])?)
        }
        StateCommand::RangeProof(args) => range_proof(&args),
        StateCommand::VerifyRangeProof(args) => verify_range_proof(&args),
        StateCommand::ChangeProof(args) => change_proof(&args),
        StateCommand::VerifyChangeProof(args) => verify_change_proof(&args),
        StateCommand::Sync(args) => sync::sync(&args),
    }
}

fn print_root(root: Hash) -> Result<()> {
    println!("{}", to_hex(&root));
    Ok(())
}

fn parse_hex(what: &str, text: &str) -> Result<Vec<u8>> {
    hex::decode(text.trim()).with_context(|| format!("{what} {text:?} is not valid hex"))
}

fn parse_root(what: &str, text: &str) -> Result<Hash> {
    parse_hash(text).with_context(|| format!("{what} {text:?}"))
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

/// Opens the database; a new one gets `arity` (default 16), an existing one its stored
/// branch factor, which `arity`, if given, must match.
fn open(db: &DbArg, arity: Option<usize>) -> Result<MerkleDb> {
    let context = || format!("opening the state database in {}", db.db.display());
    let store =
        Arc::new(FjallStore::open(&store_dir(&db.db), Durability::Sync).with_context(context)?);
    let stored = MerkleDb::stored_branch_factor(store.as_ref()).with_context(context)?;
    let branch_factor = arity.map(branch_factor).or(stored).unwrap_or_default();
    let config = Config {
        branch_factor,
        ..Config::default()
    };
    MerkleDb::open(store, config).with_context(context)
}

fn open_existing(db: &DbArg) -> Result<MerkleDb> {
    ensure!(db.db.is_dir(), "no such directory: {}", db.db.display());
    ensure!(
        store_dir(&db.db).is_dir(),
        "no state database in {} (create one with `tributary state import`)",
        db.db.display()
    );
    open(db, None)
}

/// A parsed `[start, end]` range; `None` is unbounded.
type Range = (Option<Vec<u8>>, Option<Vec<u8>>);

fn bounds(b: &Bounds) -> Result<Range> {
    let start = b
        .start
        .as_deref()
        .map(|s| parse_hex("start key", s))
        .transpose()?;
    let end = b
        .end
        .as_deref()
        .map(|s| parse_hex("end key", s))
        .transpose()?;
    if let (Some(s), Some(e)) = (&start, &end) {
        ensure!(
            s <= e,
            "start key {} is after end key {}",
            hex::encode(s),
            hex::encode(e)
        );
    }
    Ok((start, end))
}

/// Reads every pair first, so a bad line aborts before anything is written.
fn read_pairs(file: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(io::BufReader::new(
            fs::File::open(file).with_context(|| format!("opening {file}"))?,
        ))
    };
    let mut pairs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {file}"))?;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(' ').with_context(|| {
            format!("line {}: expected \"KEYHEX VALUEHEX\", got {line:?}", n + 1)
        })?;
        let key = hex::decode(k)
            .with_context(|| format!("line {}: key {k:?} is not valid hex", n + 1))?;
        let value = hex::decode(v)
            .with_context(|| format!("line {}: value {v:?} is not valid hex", n + 1))?;
        // Checked here, before anything is written: the trie checks them only at commit, one
        // batch at a time, which would leave the batches before a bad line committed.
        ensure!(
            key.len() <= tributary_merkle::MAX_KEY_LEN,
            "line {}: a key of {} bytes is over the limit of {} bytes",
            n + 1,
            key.len(),
            tributary_merkle::MAX_KEY_LEN
        );
        ensure!(
            value.len() <= tributary_merkle::MAX_VALUE_LEN,
            "line {}: a value of {} bytes is over the limit of {} bytes",
            n + 1,
            value.len(),
            tributary_merkle::MAX_VALUE_LEN
        );
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn import(args: &ImportArgs) -> Result<()> {
    let pairs = read_pairs(&args.file)?;
    fs::create_dir_all(&args.db.db)
        .with_context(|| format!("creating {}", args.db.db.display()))?;
    let db = open(&args.db, args.branch_factor)?;
    let bar = ProgressBar::new(pairs.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} pairs, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let batch = usize::try_from(args.batch).unwrap_or(usize::MAX);
    let mut root = db.root();
    for chunk in pairs.chunks(batch) {
        root = db.commit(
            chunk
                .iter()
                .map(|(k, v)| BatchOp::Put(k.clone(), v.clone())),
        )?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    print_root(root)
}

fn read_proof_file(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

fn range_proof(args: &RangeProofArgs) -> Result<()> {
    let (start, end) = bounds(&args.bounds)?;
    let limit = args.output.limit()?;
    let db = open_existing(&args.db)?;
    let root = match &args.root {
        Some(r) => parse_root("--root", r)?,
        None => db.root(),
    };
    ensure!(
        root != EMPTY_ROOT,
        "the trie at root {} is empty: there is nothing to prove",
        to_hex(&root)
    );
    let proof = db.range_proof(&root, start.as_deref(), end.as_deref(), limit)?;
    args.output.write(&proof.to_bytes())
}

fn verify_range_proof(args: &VerifyRangeArgs) -> Result<()> {
    let root = parse_root("--root", &args.root)?;
    let (start, end) = bounds(&args.bounds)?;
    let proof = RangeProof::from_bytes(&read_proof_file(&args.proof)?)
        .with_context(|| format!("{} is not a range proof", args.proof.display()))?;
    proof
        .verify(
            start.as_deref(),
            end.as_deref(),
            &root,
            branch_factor(args.branch_factor),
        )
        .context("invalid range proof")?;
    println!("{}", proof.key_values.len());
    Ok(())
}

fn change_proof(args: &ChangeProofArgs) -> Result<()> {
    let (start, end) = bounds(&args.bounds)?;
    let limit = args.output.limit()?;
    let from = parse_root("--from-root", &args.from_root)?;
    let to = parse_root("--to-root", &args.to_root)?;
    let db = open_existing(&args.db)?;
    let proof = db.change_proof(&from, &to, start.as_deref(), end.as_deref(), limit)?;
    args.output.write(&proof.to_bytes())
}

fn verify_change_proof(args: &VerifyChangeArgs) -> Result<()> {
    let root = parse_root("--root", &args.root)?;
    let (start, end) = bounds(&args.bounds)?;
    let proof = ChangeProof::from_bytes(&read_proof_file(&args.proof)?)
        .with_context(|| format!("{} is not a change proof", args.proof.display()))?;
    let db = open_existing(&args.db)?;
    db.verify_change_proof(&proof, start.as_deref(), end.as_deref(), &root)
        .context("invalid change proof")?;
    println!("{}", proof.key_changes.len());
    Ok(())
}
