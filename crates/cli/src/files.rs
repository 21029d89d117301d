//! `tributary upload` and `tributary download`: files into and out of a data directory's chunk
//! store (`--db`), or through a running node's HTTP API (`--api`). Through a node, an upload
//! is pushed to the network; `--wait` follows its tag until every chunk has a receipt.
//!
//! Bins are relative to the node's overlay address; until a node has run on the directory,
//! chunks are indexed relative to the zero address, and the node re-indexes them when it first
//! opens the store with its own overlay.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use clap::Args;
use tributary_chunk::Address;
use tributary_chunk::file::{Joiner, Splitter};
use tributary_chunk::store::Batched;

use crate::chunk::progress;

/// Chunks per durable write while uploading.
const UPLOAD_BATCH: usize = 512;

/// Where files go or come from, and how to report.
#[derive(Args)]
pub struct Target {
    /// Data directory holding the chunk store (upload creates it).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "api",
        conflicts_with = "api"
    )]
    db: Option<PathBuf>,
    /// A running node's HTTP API to go through instead.
    #[arg(long, value_name = "HOST:PORT")]
    api: Option<String>,
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
}

/// One of `--db` and `--api` (clap requires exactly one).
enum Via<'a> {
    Dir(&'a Path),
    Api(&'a str),
}

impl Target {
    fn via(&self) -> Result<Via<'_>> {
        match (&self.db, &self.api) {
            (_, Some(api)) => Ok(Via::Api(api)),
            (Some(db), None) => Ok(Via::Dir(db)),
            (None, None) => Err(anyhow::anyhow!("give --db DIR or --api HOST:PORT")),
        }
    }
}

#[derive(Args)]
pub struct UploadArgs {
    /// The file to upload, or - for stdin.
    file: String,
    #[command(flatten)]
    target: Target,
    /// With --api: wait until every chunk is synced (has a valid receipt from its
    /// neighbourhood), showing the push's progress; fails if some chunk got none.
    #[arg(long, requires = "api")]
    wait: bool,
}

/// How often `--wait` reads the tag.
const TAG_POLL: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Args)]
pub struct DownloadArgs {
    /// The file's reference (64 hex characters).
    reference: String,
    /// Where to write the file.
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    target: Target,
}

fn open_input(file: &str) -> Result<(Box<dyn io::Read + Send>, Option<u64>)> {
    if file == "-" {
        return Ok((Box::new(io::stdin()), None));
    }
    let f = File::open(file).with_context(|| format!("opening {file}"))?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok((Box::new(f), len))
}

pub fn upload(args: &UploadArgs) -> Result<()> {
    let (reader, len) = open_input(&args.file)?;
    let bar = progress(len);
    let (reference, size, stored, tag) = match args.target.via()? {
        Via::Api(api) => upload_via_api(api, bar.wrap_read(reader), len)?,
        Via::Dir(db) => upload_to_dir(db, bar.wrap_read(reader), &args.file)?,
    };
    bar.finish_and_clear();
    let pushed = match (&args.target.api, tag) {
        (Some(api), Some(uid)) if args.wait => Some(wait_for_tag(api, uid)?),
        _ => None,
    };
    if args.target.json {
        let mut v = serde_json::json!({
            "reference": reference.to_string(), "bytes": size, "chunks_stored": stored,
        });
        if let Some(uid) = tag {
            v["tagUid"] = uid.into();
        }
        if let Some(t) = &pushed {
            v["tag"] = t.clone();
        }
        println!("{v}");
    } else {
        println!("{reference}");
    }
    let failed = pushed
        .as_ref()
        .and_then(|t| t["failed"].as_u64())
        .unwrap_or(0);
    ensure!(
        failed == 0,
        "{failed} chunks got no valid receipt (the upload is stored on the node; run it again to retry)"
    );
    Ok(())
}

/// Follows tag `uid` until its push is done, with a bar of chunks synced; the last tag.
fn wait_for_tag(api: &str, uid: u64) -> Result<serde_json::Value> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} chunks synced {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !std::io::IsTerminal::is_terminal(&io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    loop {
        let mut response = agent()
            .get(format!("http://{api}/tags/{uid}"))
            .call()
            .with_context(|| format!("reading tag {uid} from {api}"))?;
        if response.status() != 200 {
            return Err(api_error(response));
        }
        let text = response
            .body_mut()
            .read_to_string()
            .context("reading the tag")?;
        let tag: serde_json::Value = serde_json::from_str(&text).context("reading the tag")?;
        let count = |k: &str| tag[k].as_u64().unwrap_or(0);
        bar.set_length(count("split"));
        bar.set_position(count("synced"));
        bar.set_message(format!(
            "({} sent, {} failed)",
            count("sent"),
            count("failed")
        ));
        if tag["done"].as_bool().unwrap_or(false) {
            bar.finish_and_clear();
            return Ok(tag);
        }
        std::thread::sleep(TAG_POLL);
    }
}

/// What an upload gives: the reference, bytes, chunks newly stored (a directory), the tag (a
/// node).
type Uploaded = (Address, u64, Option<u64>, Option<u64>);

fn upload_to_dir(db: &Path, reader: impl io::Read, name: &str) -> Result<Uploaded> {
    fs::create_dir_all(db).with_context(|| format!("creating {}", db.display()))?;
    let store = tributary_node::open_chunks(db, tributary_chunk::Address::default())?;
    let mut splitter = Splitter::new(Batched::new(&store, UPLOAD_BATCH));
    splitter
        .write_from(reader)
        .with_context(|| format!("uploading {name}"))?;
    let size = splitter.size();
    let (reference, mut sink) = splitter.finish()?;
    let stored = sink.flush()?;
    Ok((reference, size, Some(stored), None))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// The message of an API error response (`{"message", "code"}`), or its status.
fn api_error(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Error {
    let status = response.status();
    let message = response
        .body_mut()
        .read_to_string()
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| status.to_string());
    anyhow::anyhow!("the node answered {}: {message}", status.as_u16())
}

fn upload_via_api(api: &str, reader: impl io::Read + Send, len: Option<u64>) -> Result<Uploaded> {
    let mut request = agent().post(format!("http://{api}/bytes"));
    if let Some(len) = len {
        request = request.header("content-length", len.to_string());
    }
    let mut reader = reader;
    let mut response = request
        .send(ureq::SendBody::from_reader(&mut reader))
        .with_context(|| format!("uploading through {api}"))?;
    if response.status() != 201 {
        return Err(api_error(response));
    }
    let text = response
        .body_mut()
        .read_to_string()
        .context("reading the node's answer")?;
    let reply: serde_json::Value =
        serde_json::from_str(&text).context("reading the node's answer")?;
    let reference: Address = reply["reference"].as_str().unwrap_or_default().parse()?;
    Ok((
        reference,
        len.unwrap_or_default(),
        None,
        reply["tagUid"].as_u64(),
    ))
}

pub fn download(args: &DownloadArgs) -> Result<()> {
    let reference: Address = args.reference.parse()?;
    // Write to a new file of a unique name beside the target and rename it at the end: a
    // failed download leaves no partial file, and no file already there is touched.
    let mut partial = partial_beside(&args.out)?;
    let size = args.target.via().and_then(|via| {
        let mut out = BufWriter::new(partial.as_file_mut());
        let size = match via {
            Via::Api(api) => download_via_api(api, reference, &mut out),
            Via::Dir(db) => download_from_dir(db, reference, &mut out),
        }?;
        out.flush()
            .with_context(|| format!("writing {}", args.out.display()))?;
        Ok(size)
    })?;
    partial
        .persist(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if args.target.json {
        println!(
            "{}",
            serde_json::json!({ "reference": reference.to_string(), "bytes": size, "path": args.out })
        );
    }
    Ok(())
}

/// A new, uniquely named file in the directory of `out` (removed if dropped unpersisted).
fn partial_beside(out: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .map_or_else(|| "download".into(), |n| n.to_string_lossy());
    // The mode a plain create gives (0666 less the umask), not tempfile's private 0600: the
    // file is the user's download once renamed.
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o666);
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .permissions(mode)
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))
}

fn download_from_dir(db: &Path, reference: Address, out: &mut impl Write) -> Result<u64> {
    ensure!(
        db.join("store").is_dir(),
        "no chunk store in {}",
        db.display()
    );
    let store = tributary_node::open_chunks(db, tributary_chunk::Address::default())?;
    let joiner = Joiner::new(&*store, reference)?;
    let bar = progress(Some(joiner.size()));
    joiner.read_all(&mut bar.wrap_write(out))?;
    bar.finish_and_clear();
    Ok(joiner.size())
}

fn download_via_api(api: &str, reference: Address, out: &mut impl Write) -> Result<u64> {
    let mut response = agent()
        .get(format!("http://{api}/bytes/{reference}"))
        .call()
        .with_context(|| format!("downloading through {api}"))?;
    if response.status() != 200 {
        return Err(api_error(response));
    }
    let len = response.body().content_length();
    let bar = progress(len);
    let copied = io::copy(&mut bar.wrap_read(response.body_mut().as_reader()), out)
        .with_context(|| format!("downloading through {api}"))?;
    bar.finish_and_clear();
    ensure!(
        len.is_none_or(|l| l == copied),
        "the node sent {copied} of {} bytes",
        len.unwrap_or_default()
    );
    Ok(copied)
}
