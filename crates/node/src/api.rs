//! The node's HTTP API, with bee's routes and error shape (`{"message", "code"}`):
//!
//! | route | what |
//! |---|---|
//! | `POST /bytes` | stores the body as a file and pushes its chunks to their neighbourhoods; `201 {"reference", "tagUid"}` at once (with `swarm-deferred-upload: false`, once every chunk has a receipt; `502` if some got none) |
//! | `POST /tags`, `GET /tags`, `GET /tags/{uid}`, `DELETE /tags/{uid}` | uploads' progress: chunks split, stored, sent, synced (receipted), failed; `POST /bytes` counts on the tag its `swarm-tag` header names |
//! | `GET /bytes/{ref}[?local=true]` | streams the file; a single `Range: bytes=…` gives `206`; chunks the store lacks are retrieved from the network unless `local=true` |
//! | `POST /chunks` | stores one chunk (span ‖ payload); `201 {"reference"}` |
//! | `POST /chunks/{addr}` | the same, refused with `400` unless the chunk hashes to `addr` |
//! | `GET /chunks/{addr}[?local=true]` | the chunk's wire data: from this node's store, else retrieved from the network (`404` if no peer delivers it); `local=true` reads the store only |
//! | `POST /db/{db}/blobs` | a replicated database's blob: stored and pushed as `POST /bytes` does; `201 {"reference", "tagUid"}` (a row then holds the reference) |
//! | `GET /db/{db}/blobs/{ref}` | the blob, as `GET /bytes/{ref}`: from this node's store, else retrieved from whichever node has it |
//! | `GET /reserve` | `{"chunks": N, "bins": [{"bin", "chunks", "cursor"}, …]}` of this node's store |
//!
//! Files stream in both directions: the request body feeds the splitter and the joiner feeds
//! the response through bounded channels (at most 16 frames in flight), so memory does not grow
//! with the file. Chunk store work runs on blocking threads, never on the async runtime.
//!
//! Slow clients are bounded: at most [`MAX_TRANSFERS`] file uploads and downloads run at once
//! (more get `503`), and a transfer whose client sends or takes nothing for
//! [`TRANSFER_IDLE_TIMEOUT`] ends (`408` for an upload; a download's body is cut), so no client
//! can hold a blocking thread for long. Every error, body-limit refusals included, is JSON.

use std::io::{self, Write};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tributary_chunk::bmt::CHUNK_SIZE;
use tributary_chunk::file::{FileError, Joiner, Splitter};
use tributary_chunk::store::ChunkStore;
use tributary_chunk::{Address, Chunk};

use crate::network::{Network, NetworkError, NetworkSource};
use crate::tags::{self, TagSink, Tags};

/// Frames in flight between the HTTP body and the splitter or joiner.
const FRAMES_IN_FLIGHT: usize = 16;
/// Bytes per frame of a streamed file.
const FRAME: usize = 64 * 1024;

/// File uploads and downloads served at once.
pub const MAX_TRANSFERS: usize = 16;
/// How long a file transfer may go without the client sending or taking a byte.
pub const TRANSFER_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the handlers share: the chunk store, the network (none for a store-only API) and
/// the transfer slots.
#[derive(Clone)]
struct Api {
    store: Arc<ChunkStore>,
    network: Option<Network>,
    tags: Arc<Tags>,
    transfers: Arc<Semaphore>,
}

/// Whether `?local=` asks for a store-only read (absent: no).
fn local_only(query: &std::collections::HashMap<String, String>) -> Result<bool, ApiError> {
    match query.get("local").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("local must be true or false, not {other:?}"),
        )),
    }
}

impl Api {
    /// A transfer slot, or `503` when all are taken.
    fn transfer(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.transfers.clone().try_acquire_owned().map_err(|_| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_TRANSFERS} file transfers are running; try again later"),
            )
        })
    }
}

/// The API's routes over a chunk store, reading what it lacks through `network` (none: the
/// store only).
pub fn router(store: Arc<ChunkStore>, network: Option<Network>) -> Router {
    let api = Api {
        store,
        network,
        tags: Arc::new(Tags::default()),
        transfers: Arc::new(Semaphore::new(MAX_TRANSFERS)),
    };
    Router::new()
        .route(
            "/bytes",
            post(post_bytes).layer(DefaultBodyLimit::disable()),
        )
        .route("/bytes/{reference}", get(get_bytes))
        .route(
            "/chunks",
            post(post_chunk).layer(DefaultBodyLimit::max(8 + CHUNK_SIZE)),
        )
        .route(
            "/chunks/{address}",
            post(post_chunk_at)
                .get(get_chunk)
                .layer(DefaultBodyLimit::max(8 + CHUNK_SIZE)),
        )
        .route("/reserve", get(reserve))
        .route(
            "/db/{db}/blobs",
            post(post_blob).layer(DefaultBodyLimit::disable()),
        )
        .route("/db/{db}/blobs/{reference}", get(get_blob))
        .route("/tags", get(list_tags).post(post_tag))
        .route("/tags/{uid}", get(get_tag).delete(delete_tag))
        .with_state(api)
}

/// The answer to a route the API does not have: bee's JSON error shape, like every other.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    error(StatusCode::NOT_FOUND, format!("no route {}", uri.path())).into_response()
}

/// The answer to a method a route does not take.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}

/// An error answer: its status, and a message naming what is wrong.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "message": self.message, "code": self.code.as_u16() });
        (self.code, axum::Json(body)).into_response()
    }
}

fn error(code: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

fn parse_address(text: &str) -> Result<Address, ApiError> {
    text.parse()
        .map_err(|e: tributary_chunk::ChunkError| error(StatusCode::BAD_REQUEST, e.to_string()))
}

fn file_error(e: &FileError) -> ApiError {
    match e {
        FileError::Missing(address) => {
            error(StatusCode::NOT_FOUND, format!("chunk {address} not found"))
        }
        FileError::Io(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Whether `swarm-deferred-upload` lets the upload return before its push ends (bee's
/// header; absent: yes).
fn deferred(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers
        .get("swarm-deferred-upload")
        .map(HeaderValue::to_str)
    {
        None => Ok(true),
        Some(Ok(v)) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(Ok(v)) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "swarm-deferred-upload must be true or false",
        )),
    }
}

/// The tag an upload counts on: the one its `swarm-tag` header names (it must exist), or a
/// new one.
fn upload_tag(api: &Api, headers: &HeaderMap) -> Result<u32, ApiError> {
    let Some(value) = headers.get("swarm-tag") else {
        return api
            .tags
            .create()
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
    };
    let uid = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "swarm-tag must be a tag uid"))?;
    api.tags
        .get(uid)
        .map(|_| uid)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no tag {uid}")))
}

/// `POST /bytes`: splits and stores the body, then (in a node) pushes its chunks to their
/// neighbourhoods, in the background unless `swarm-deferred-upload: false`. The postage
/// header `swarm-postage-batch-id` is accepted and ignored (no stamps here).
async fn post_bytes(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deferred = deferred(&headers)?;
    let _slot = api.transfer()?;
    let uid = upload_tag(&api, &headers)?;
    api.tags.begin(uid);
    let (reference, addresses) = match split_body(&api, uid, body).await {
        Ok(split) => split,
        Err(e) => {
            if headers.contains_key("swarm-tag") {
                api.tags.end(uid, 0);
            } else {
                api.tags.remove(uid);
            }
            return Err(e);
        }
    };
    tags::set_reference(&api.tags, uid, reference);
    let Some(network) = api.network else {
        api.tags.end(uid, 0);
        return Ok(created(reference, uid));
    };
    let total = addresses.len();
    let push = tokio::spawn(tags::push_upload(
        Arc::clone(&api.tags),
        uid,
        Arc::clone(&api.store),
        network,
        addresses,
    ));
    if !deferred {
        let failed = push
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if failed > 0 {
            return Err(error(
                StatusCode::BAD_GATEWAY,
                format!("{failed} of {total} chunks got no valid receipt (tag {uid})"),
            ));
        }
    }
    Ok(created(reference, uid))
}

/// Feeds the request body to a splitter storing into the node; the reference and the
/// addresses of every chunk.
async fn split_body(api: &Api, uid: u32, body: Body) -> Result<(Address, Vec<Address>), ApiError> {
    let (store, tags) = (Arc::clone(&api.store), Arc::clone(&api.tags));
    let (tx, mut rx) = mpsc::channel::<Bytes>(FRAMES_IN_FLIGHT);
    let split = tokio::task::spawn_blocking(move || -> Result<_, FileError> {
        let mut splitter = Splitter::new(TagSink::new(&store, &tags, uid));
        while let Some(frame) = rx.blocking_recv() {
            splitter.write(&frame)?;
        }
        let (reference, sink) = splitter.finish()?;
        let addresses = sink.finish().map_err(|e| FileError::Store(Box::new(e)))?;
        Ok((reference, addresses))
    });
    let mut frames = body.into_data_stream();
    loop {
        let next = tokio::time::timeout(TRANSFER_IDLE_TIMEOUT, frames.next()).await;
        let Ok(next) = next else {
            // Dropping the sender ends the splitter; what it stored is content-addressed
            // chunks, harmless and reused by a retry.
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!("no body bytes for {} s", TRANSFER_IDLE_TIMEOUT.as_secs()),
            ));
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
        })?;
        if tx.send(frame).await.is_err() {
            break; // the splitter stopped: its error is reported below
        }
    }
    drop(tx);
    split
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| file_error(&e))
}

fn created(reference: Address, uid: u32) -> Response {
    let mut response = (
        StatusCode::CREATED,
        axum::Json(json!({ "reference": reference.to_string(), "tagUid": uid })),
    )
        .into_response();
    response
        .headers_mut()
        .insert("swarm-tag", HeaderValue::from(uid));
    response
}

/// `GET /tags[?offset=N&limit=M]`: the kept tags, oldest first (bee's paging: limit 1 to
/// 1,000, default 100).
async fn list_tags(
    State(api): State<Api>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let number = |key: &str, default: usize| -> Result<usize, ApiError> {
        query.get(key).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| error(StatusCode::BAD_REQUEST, format!("{key} must be a number")))
        })
    };
    let (offset, limit) = (number("offset", 0)?, number("limit", 100)?);
    if !(1..=1000).contains(&limit) {
        return Err(error(StatusCode::BAD_REQUEST, "limit must be 1 to 1000"));
    }
    let tags: Vec<_> = api
        .tags
        .list()
        .into_iter()
        .skip(offset)
        .take(limit)
        .collect();
    Ok(axum::Json(json!({ "tags": tags })).into_response())
}

/// `POST /tags`: a new, empty tag (`201`), for an upload to count on through `swarm-tag`.
async fn post_tag(State(api): State<Api>) -> Result<Response, ApiError> {
    let uid = api
        .tags
        .create()
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let tag = api.tags.get(uid).unwrap_or_default();
    Ok((StatusCode::CREATED, axum::Json(tag)).into_response())
}

fn parse_uid(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not a tag uid"),
        )
    })
}

/// `GET /tags/{uid}`: one upload's counters.
async fn get_tag(State(api): State<Api>, Path(uid): Path<String>) -> Result<Response, ApiError> {
    let uid = parse_uid(&uid)?;
    api.tags
        .get(uid)
        .map(|t| axum::Json(t).into_response())
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no tag {uid}")))
}

/// `DELETE /tags/{uid}`: forgets a tag (`204`).
async fn delete_tag(State(api): State<Api>, Path(uid): Path<String>) -> Result<Response, ApiError> {
    let uid = parse_uid(&uid)?;
    if api.tags.remove(uid) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(error(StatusCode::NOT_FOUND, format!("no tag {uid}")))
    }
}

/// Parses a single `Range: bytes=…` against a file of `size` bytes into `start..end`.
/// `Ok(None)`: no range (or several, which may be ignored); `Err`: unsatisfiable.
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let spec = value
        .to_str()
        .map_err(|_| ())?
        .trim()
        .strip_prefix("bytes=")
        .ok_or(())?;
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let range = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            (a, b.saturating_add(1).min(size))
        }
    };
    if range.0 >= range.1 || range.0 >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// Writes into a bounded channel of response frames, blocking while the client is slow, for
/// at most [`TRANSFER_IDLE_TIMEOUT`] per frame.
struct FrameWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    runtime: tokio::runtime::Handle,
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let frame = Ok(Bytes::copy_from_slice(buf));
        self.runtime
            .block_on(self.tx.send_timeout(frame, TRANSFER_IDLE_TIMEOUT))
            .map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => {
                    io::Error::new(io::ErrorKind::TimedOut, "the client took nothing")
                }
                mpsc::error::SendTimeoutError::Closed(_) => {
                    io::Error::new(io::ErrorKind::BrokenPipe, "client went away")
                }
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the database name of a blob route.
fn blob_db(db: &str) -> Result<(), ApiError> {
    tributary_replica::types::check_name("database", db)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// `POST /db/{db}/blobs`: the body as a file in the chunk store, pushed to its
/// neighbourhood, so any member can retrieve it by the reference a row holds. The chunk
/// store evicts nothing yet, so a blob stays as long as the node's store.
async fn post_blob(
    State(api): State<Api>,
    Path(db): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    blob_db(&db)?;
    post_bytes(State(api), headers, body).await
}

/// `GET /db/{db}/blobs/{ref}`: the blob, fetched through retrieval if this node lacks it.
async fn get_blob(
    State(api): State<Api>,
    Path((db, reference)): Path<(String, String)>,
    query: Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    blob_db(&db)?;
    get_bytes(State(api), Path(reference), query, headers).await
}

async fn get_bytes(
    State(api): State<Api>,
    Path(reference): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let local = local_only(&query)?;
    let reference = parse_address(&reference)?;
    let slot = api.transfer()?;
    let network = if local { None } else { api.network };
    let handle = tokio::runtime::Handle::current();
    let store = Arc::new(NetworkSource::new(api.store, network.map(|n| (n, handle))));
    let probe = store.clone();
    let size = blocking(move || Joiner::new(&*probe, reference).map(|j| j.size()))
        .await?
        .map_err(|e| file_error(&e))?;
    let Ok(range) = parse_range(&headers, size) else {
        let mut response = error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("the file has {size} bytes"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(response);
    };
    let (start, end) = range.unwrap_or((0, size));
    let (tx, rx) = mpsc::channel(FRAMES_IN_FLIGHT);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot; // held until the joiner is done
        let failed = tx.clone();
        let result = Joiner::new(&*store, reference).and_then(|joiner| {
            let mut out = io::BufWriter::with_capacity(FRAME, FrameWriter { tx, runtime });
            joiner.read_range(start, end, &mut out)?;
            Ok(out.flush()?)
        });
        if let Err(e) = result {
            // Headers are gone already: end the body with an error, so the client sees a
            // truncated response rather than a short file.
            let _ = failed.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

async fn store_chunk(
    store: Arc<ChunkStore>,
    data: Result<Bytes, BytesRejection>,
    expected: Option<Address>,
) -> Result<Response, ApiError> {
    // A body over the limit is refused by axum before it is read; answer in the API's shape.
    let data = data.map_err(|e| error(e.status(), e.body_text()))?;
    let chunk = Chunk::from_wire(data.to_vec())
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    if let Some(expected) = expected
        && expected != chunk.address()
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "chunk content hashes to {}, not to {expected}",
                chunk.address()
            ),
        ));
    }
    let address = chunk.address();
    blocking(move || store.put(&chunk))
        .await?
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "reference": address.to_string() })),
    )
        .into_response())
}

async fn post_chunk(
    State(api): State<Api>,
    data: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    store_chunk(api.store, data, None).await
}

async fn post_chunk_at(
    State(api): State<Api>,
    Path(address): Path<String>,
    data: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    store_chunk(api.store, data, Some(parse_address(&address)?)).await
}

/// `GET /reserve`: what the node's own store holds, per bin. Bin ids are dense (one per chunk,
/// never reused, nothing deleted yet), so a bin's chunk count is its cursor.
async fn reserve(State(api): State<Api>) -> Response {
    let cursors = api.store.cursors();
    let bins: Vec<serde_json::Value> = cursors
        .iter()
        .enumerate()
        .map(|(bin, c)| json!({"bin": bin, "chunks": c, "cursor": c}))
        .collect();
    axum::Json(json!({"chunks": cursors.iter().sum::<u64>(), "bins": bins})).into_response()
}

async fn get_chunk(
    State(api): State<Api>,
    Path(address): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let local = local_only(&query)?;
    let address = parse_address(&address)?;
    let store = api.store;
    let found = blocking(move || store.get(&address))
        .await?
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let data = match (found, api.network) {
        (Some(data), _) => data,
        (None, Some(network)) if !local => match network.fetch(address).await {
            Ok(chunk) => chunk.into_data(),
            Err(e @ (NetworkError::Retrieval(_) | NetworkError::Push(_))) => {
                return Err(error(StatusCode::NOT_FOUND, e.to_string()));
            }
            Err(e @ (NetworkError::Stopped | NetworkError::NoAnswer)) => {
                return Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
            }
        },
        (None, _) => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("chunk {address} not found"),
            ));
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}
