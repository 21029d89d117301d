//! The HTTP API of replicated databases (JSON; errors `{"message", "code"}` as the chunk
//! routes):
//!
//! | route | what |
//! |---|---|
//! | `PUT /db/{db}/{collection}/{key}` | sets the row to the body; `{"version"}` |
//! | `GET /db/{db}/{collection}/{key}[?meta=true]` | the value (`404` if absent or deleted); `meta=true`: `{"value", "version", "deleted", "conflict"}` |
//! | `DELETE /db/{db}/{collection}/{key}` | deletes the row (`404` if it has none) |
//! | `GET /db/{db}/{collection}[?prefix=P&after=K&limit=N]` | a page of the rows in key order (a deleted one only if in conflict: `deleted: true` and the conflicting heads), after key `K`: at most `N` (default and most [`MAX_SCAN_ROWS`]) and about [`MAX_SCAN_BYTES`] of values; header `x-tributary-more: true` if rows may follow (ask again with `after` = the last key) |
//! | `POST /db/{db}/batch` | JSON lines `{"op": "put"\|"delete", "collection", "key", "value"\|"value_hex"}`, applied atomically |
//! | `GET /db/{db}/watch[?from=MARKER]` | newline-delimited JSON changes after the marker; stays open for new ones (a blank line every 15 s while idle) |
//! | `GET /db/{db}/conflicts[?wait=true]` | conflicts by closure; `wait=true` waits up to 30 s for one |
//! | `POST /db/{db}/conflicts/resolve` | `[{"collection", "key", "choice": "local"\|"remote"\|"value", "value"\|"value_hex"\|"delete"}]`, one batch |
//! | `GET /db/{db}/rules`, `PUT /db/{db}/rules` | conflict rules; `PUT` takes `{"collection", "prefix", "rule"}` |
//! | `POST /syncgroups` | `{"db", "name", "description", "collections", "readers", "writers", "admins"}` |
//! | `POST /syncgroups/{db}/{name}/join` | `{"admin": NODE_ID or MULTIADDR with /p2p/}` |
//! | `POST /syncgroups/{db}/{name}/leave`, `…/eject` (`{"member"}`) | |
//! | `GET /syncgroups/{db}/{name}` | spec, members, knowledge, per-member knowledge and last sync |
//!
//! Values in JSON are `"value"` (UTF-8 text) or, when they are not text, `"value_hex"`.
//! Keys are one path segment (percent-encoded); the collection names `batch`, `watch`,
//! `conflicts`, `rules` and `blobs` are routes, so the engine refuses them as collection
//! names everywhere ([`tributary_replica::types::RESERVED_COLLECTIONS`]).
//! Engine calls run on the blocking pool ([`Replicas::call`]); a write tells the loop, which
//! sends news to the members.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tributary_replica::resolve::{Choice, Conflict, Rule};
use tributary_replica::syncgroup::{MemberState, Spec};
use tributary_replica::types::{MAX_BATCH_BYTES, MAX_VALUE_LEN};
use tributary_replica::{NodeId, Op, Page, ReplicaError, RowState};

use crate::replica::{Admin, JOIN_TIMEOUT, REQUEST_TIMEOUT, Replicas, now_ms};
use crate::runtime::Query as LoopQuery;

/// Watch streams open at once; more get `503`.
pub const MAX_WATCHERS: usize = 64;
/// Rows of a scan page at most (the default of `limit`).
pub const MAX_SCAN_ROWS: usize = 10_000;
/// Value bytes (conflicting heads' included) after which a scan page ends (a page holds at
/// least one row): a scan answer is at most about twice this (values as hex) plus one row,
/// whatever the collection holds.
pub const MAX_SCAN_BYTES: usize = 16 << 20;
/// The header that says whether rows may follow a scan page.
pub const MORE_HEADER: &str = "x-tributary-more";
/// Changes a watch stream reads per store read.
pub const WATCH_PAGE: usize = 256;
/// `conflicts?wait=true` requests waiting at once; more get `503`.
pub const MAX_CONFLICT_WAITERS: usize = 16;
/// How long `conflicts?wait=true` waits.
pub const CONFLICT_WAIT: Duration = Duration::from_secs(30);
/// A blank line on an idle watch stream this often, so a gone client is noticed.
const WATCH_HEARTBEAT: Duration = Duration::from_secs(15);
/// Largest batch or resolve body: a batch's records as hex text, and the JSON around them.
const MAX_JSON_BODY: usize = 3 * MAX_BATCH_BYTES;

#[derive(Clone)]
struct DbApi {
    replicas: Replicas,
    queries: Option<mpsc::Sender<LoopQuery>>,
    watchers: Arc<Semaphore>,
    waiters: Arc<Semaphore>,
}

/// An error answer.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "message": self.1, "code": self.0.as_u16() });
        (self.0, axum::Json(body)).into_response()
    }
}

/// A request body, or the limit's refusal in the API's shape (axum answers it in text).
fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| ApiError(e.status(), e.body_text()))
}

/// A request body that must be one JSON value.
fn json_of(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    serde_json::from_slice(&body_of(body)?).map_err(|e| bad(format!("not JSON: {e}")))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

impl From<ReplicaError> for ApiError {
    fn from(e: ReplicaError) -> Self {
        use ReplicaError as E;
        let code = match &e {
            E::BadName { .. }
            | E::ReservedName(_)
            | E::BadKey { .. }
            | E::ValueTooLarge { .. }
            | E::BadBatch { .. }
            | E::BadNodeId(_)
            | E::Malformed(_)
            | E::NoSide(..)
            | E::TooManyRules(_) => StatusCode::BAD_REQUEST,
            E::NotWriter { .. } | E::NotAdmin(..) | E::NotAllowed(..) | E::NotAuthorized(_) => {
                StatusCode::FORBIDDEN
            }
            E::NoSyncgroup { .. } | E::NoConflict(..) => StatusCode::NOT_FOUND,
            E::SyncgroupExists(_) | E::SpecVersion { .. } | E::JoinPending(_) => {
                StatusCode::CONFLICT
            }
            E::MarkerTooOld { .. } => StatusCode::GONE,
            E::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Store(_) | E::Corrupt(_) | E::Signing => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // The store error's cause is in its source chain.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self(code, message)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the engine task failed: {e}"),
        )
    }
}

type ApiResult = Result<Response, ApiError>;

/// The routes over the shared engine; `queries` reaches the node's loop (none: no network,
/// writes send no news and joins are refused).
pub fn router(replicas: Replicas, queries: Option<mpsc::Sender<LoopQuery>>) -> Router {
    let api = DbApi {
        replicas,
        queries,
        watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
        waiters: Arc::new(Semaphore::new(MAX_CONFLICT_WAITERS)),
    };
    Router::new()
        .route(
            "/db/{db}/batch",
            post(batch).layer(DefaultBodyLimit::max(MAX_JSON_BODY)),
        )
        .route("/db/{db}/watch", get(watch))
        .route("/db/{db}/conflicts", get(conflicts))
        .route(
            "/db/{db}/conflicts/resolve",
            post(resolve).layer(DefaultBodyLimit::max(MAX_JSON_BODY)),
        )
        .route("/db/{db}/rules", get(rules).put(set_rule))
        .route("/db/{db}/{collection}", get(scan))
        .route(
            "/db/{db}/{collection}/{key}",
            put(put_row)
                .get(get_row)
                .delete(delete_row)
                .layer(DefaultBodyLimit::max(MAX_VALUE_LEN)),
        )
        .route("/syncgroups", post(create_syncgroup))
        .route("/syncgroups/{db}/{name}", get(get_syncgroup))
        .route("/syncgroups/{db}/{name}/join", post(join))
        .route("/syncgroups/{db}/{name}/leave", post(leave))
        .route("/syncgroups/{db}/{name}/eject", post(eject))
        .with_state(api)
}

impl DbApi {
    /// Tells the loop `db` changed here; a full queue drops the news (the next round syncs).
    fn news(&self, db: &str) {
        if let Some(q) = &self.queries {
            let _ = q.try_send(LoopQuery::ReplicaNews(db.to_string()));
        }
        self.replicas.changed();
    }

    /// Tells the loop to sync `db` (a syncgroup was created), waiting for room in the queue:
    /// unlike a news, this one must not be dropped.
    async fn track(&self, db: &str) {
        if let Some(q) = &self.queries {
            let _ = q.send(LoopQuery::ReplicaTrack(db.to_string())).await;
        }
        self.replicas.changed();
    }
}

/// A value as JSON: `{"value": text}` or `{"value_hex": hex}`.
fn value_fields(value: &[u8]) -> (&'static str, Value) {
    match std::str::from_utf8(value) {
        Ok(text) => ("value", Value::String(text.into())),
        Err(_) => ("value_hex", Value::String(hex::encode(value))),
    }
}

fn row_json(key: &str, state: &RowState) -> Value {
    let mut out = json!({
        "key": key,
        "version": hex::encode(state.version.0),
        "deleted": state.value.is_none(),
    });
    if let Some(v) = &state.value {
        let (name, value) = value_fields(v);
        out[name] = value;
    }
    out["conflict"] = state
        .conflict
        .iter()
        .map(|v| opt_value(v.as_deref()))
        .collect();
    out
}

/// A value or a deletion, as one JSON object.
fn opt_value(value: Option<&[u8]>) -> Value {
    match value {
        None => json!({ "deleted": true }),
        Some(v) => {
            let (name, value) = value_fields(v);
            json!({ name: value })
        }
    }
}

/// The value of an object's `value` (text) or `value_hex` field.
fn value_of(v: &Value) -> Result<Option<Vec<u8>>, ApiError> {
    if let Some(text) = v.get("value") {
        let text = text.as_str().ok_or_else(|| bad("value must be a string"))?;
        return Ok(Some(text.as_bytes().to_vec()));
    }
    if let Some(h) = v.get("value_hex") {
        let h = h
            .as_str()
            .ok_or_else(|| bad("value_hex must be a string"))?;
        return hex::decode(h.strip_prefix("0x").unwrap_or(h))
            .map(Some)
            .map_err(|e| bad(format!("value_hex: {e}")));
    }
    Ok(None)
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("no string field {name:?}")))
}

/// One line of a batch.
///
/// # Errors
/// A line that is not such an object.
pub fn parse_op(line: &str) -> Result<Op, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    parse_op_value(&v).map_err(|e| e.1)
}

fn parse_op_value(v: &Value) -> Result<Op, ApiError> {
    let collection = str_field(v, "collection")?.to_string();
    let key = str_field(v, "key")?.to_string();
    match str_field(v, "op")? {
        "put" => Ok(Op::Put {
            collection,
            key,
            value: value_of(v)?.ok_or_else(|| bad("a put needs value or value_hex"))?,
        }),
        "delete" => Ok(Op::Delete { collection, key }),
        other => Err(bad(format!("op {other:?} is neither put nor delete"))),
    }
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(bad(format!("{name} must be true or false, not {other:?}"))),
    }
}

async fn put_row(
    State(api): State<DbApi>,
    Path((db, collection, key)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_of(body)?;
    let d = db.clone();
    let version = api
        .replicas
        .call(move |r| r.put(now_ms(), &d, &collection, &key, &body))
        .await??;
    api.news(&db);
    Ok(axum::Json(json!({ "version": hex::encode(version.0) })).into_response())
}

async fn get_row(
    State(api): State<DbApi>,
    Path((db, collection, key)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let meta = flag(&query, "meta")?;
    let k = key.clone();
    let state = api
        .replicas
        .call(move |r| r.get(&db, &collection, &k))
        .await??;
    let state = state.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no row {key}")))?;
    if meta {
        return Ok(axum::Json(row_json(&key, &state)).into_response());
    }
    match state.value {
        Some(v) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(v),
        )
            .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("row {key} is deleted"),
        )),
    }
}

async fn delete_row(
    State(api): State<DbApi>,
    Path((db, collection, key)): Path<(String, String, String)>,
) -> ApiResult {
    let d = db.clone();
    let k = key.clone();
    let version = api
        .replicas
        .call(move |r| {
            let live = r
                .get(&d, &collection, &k)?
                .is_some_and(|s| s.value.is_some());
            live.then(|| r.delete(now_ms(), &d, &collection, &k))
                .transpose()
        })
        .await??;
    let version =
        version.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no row {key}")))?;
    api.news(&db);
    Ok(axum::Json(json!({ "version": hex::encode(version.0) })).into_response())
}

async fn scan(
    State(api): State<DbApi>,
    Path((db, collection)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let after = query.get("after").cloned();
    let limit = match query.get("limit") {
        None => MAX_SCAN_ROWS,
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| (1..=MAX_SCAN_ROWS).contains(n))
            .ok_or_else(|| bad(format!("limit must be 1 to {MAX_SCAN_ROWS}")))?,
    };
    let (rows, more) = api
        .replicas
        .call(move |r| {
            let page = Page {
                after: after.as_deref(),
                rows: limit,
                bytes: MAX_SCAN_BYTES,
            };
            r.scan_page(&db, &collection, &prefix, &page)
        })
        .await??;
    // Every row the engine gives is shown (a deleted one only comes in conflict), so the
    // page's last key is where the next page starts.
    let rows: Vec<Value> = rows.iter().map(|(k, s)| row_json(k, s)).collect();
    let more = if more { "true" } else { "false" };
    Ok(([(MORE_HEADER, more)], axum::Json(Value::Array(rows))).into_response())
}

async fn batch(
    State(api): State<DbApi>,
    Path(db): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_of(body)?;
    let text = std::str::from_utf8(&body).map_err(|_| bad("the batch is not UTF-8"))?;
    let mut ops = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        ops.push(parse_op(line).map_err(|e| bad(format!("line {}: {e}", n + 1)))?);
    }
    if ops.is_empty() {
        return Err(bad("the batch is empty"));
    }
    let d = db.clone();
    let versions = api
        .replicas
        .call(move |r| r.batch(now_ms(), &d, &ops))
        .await??;
    api.news(&db);
    Ok(axum::Json(json!({ "rows": versions.len() })).into_response())
}

fn conflicts_json(groups: &[Vec<Conflict>]) -> Value {
    let values =
        |vs: &[Option<Vec<u8>>]| -> Value { vs.iter().map(|v| opt_value(v.as_deref())).collect() };
    groups
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|c| {
                    json!({
                        "collection": c.row.collection, "key": c.row.key, "rule": c.rule.name(),
                        "local": values(&c.local), "remote": values(&c.remote),
                        "ancestor": c.ancestor.as_ref().map(|a| opt_value(a.as_deref())),
                    })
                })
                .collect::<Value>()
        })
        .collect()
}

async fn conflicts(
    State(api): State<DbApi>,
    Path(db): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let wait = flag(&query, "wait")?;
    let _waiting = if wait {
        Some(api.waiters.clone().try_acquire_owned().map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_CONFLICT_WAITERS} resolvers are waiting already; try later"),
            )
        })?)
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + CONFLICT_WAIT;
    let mut changes = api.replicas.subscribe();
    loop {
        changes.mark_unchanged();
        let d = db.clone();
        let groups = api.replicas.call(move |r| r.conflicts(&d)).await??;
        if !wait || !groups.is_empty() {
            return Ok(axum::Json(conflicts_json(&groups)).into_response());
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Ok(axum::Json(json!([])).into_response()),
        }
    }
}

fn parse_answer(v: &Value) -> Result<(String, String, Choice), ApiError> {
    let collection = str_field(v, "collection")?.to_string();
    let key = str_field(v, "key")?.to_string();
    let choice = match str_field(v, "choice")? {
        "local" => Choice::Local,
        "remote" => Choice::Remote,
        "value" => {
            if v.get("delete").and_then(Value::as_bool) == Some(true) {
                Choice::Value(None)
            } else {
                Choice::Value(Some(value_of(v)?.ok_or_else(|| {
                    bad("choice value needs value, value_hex or delete")
                })?))
            }
        }
        other => return Err(bad(format!("choice {other:?}: use local, remote or value"))),
    };
    Ok((collection, key, choice))
}

async fn resolve(
    State(api): State<DbApi>,
    Path(db): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let v = json_of(body)?;
    let list = v
        .as_array()
        .ok_or_else(|| bad("expected a JSON array of answers"))?;
    let answers = list
        .iter()
        .map(parse_answer)
        .collect::<Result<Vec<_>, _>>()?;
    if answers.is_empty() {
        return Err(bad("no answers"));
    }
    let d = db.clone();
    let n = answers.len();
    api.replicas
        .call(move |r| r.resolve(now_ms(), &d, &answers))
        .await??;
    api.news(&db);
    Ok(axum::Json(json!({ "resolved": n })).into_response())
}

async fn rules(State(api): State<DbApi>, Path(db): Path<String>) -> ApiResult {
    let rules = api.replicas.call(move |r| r.rules(&db)).await??;
    let out: Vec<Value> = rules
        .iter()
        .map(|(c, p, rule)| json!({ "collection": c, "prefix": p, "rule": rule.name() }))
        .collect();
    Ok(axum::Json(Value::Array(out)).into_response())
}

async fn set_rule(
    State(api): State<DbApi>,
    Path(db): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let v = json_of(body)?;
    let collection = str_field(&v, "collection")?.to_string();
    let prefix = v
        .get("prefix")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let rule: Rule = str_field(&v, "rule")?.parse().map_err(bad)?;
    api.replicas
        .call(move |r| r.set_rule(&db, &collection, &prefix, rule))
        .await??;
    Ok(axum::Json(json!({})).into_response())
}

async fn watch(
    State(api): State<DbApi>,
    Path(db): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let from: u64 = match query.get("from") {
        None => 0,
        Some(m) => m
            .parse()
            .map_err(|_| bad(format!("from must be a marker (a number), not {m:?}")))?,
    };
    let permit = api.watchers.clone().try_acquire_owned().map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_WATCHERS} watch streams are open; try later"),
        )
    })?;
    let d = db.clone();
    // Subscribed before the first read, so a commit right after it wakes the stream.
    let mut changes = api.replicas.subscribe();
    changes.mark_unchanged();
    // The first page is read before the answer starts, so a bad marker is an error status.
    let first = api
        .replicas
        .call(move |r| r.watch(&d, from, WATCH_PAGE))
        .await??;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let _permit = permit;
        follow(api, db, (from, first), changes, tx).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Feeds a watch stream until the client goes away or the feed fails.
async fn follow(
    api: DbApi,
    db: String,
    (mut from, mut page): (u64, Vec<tributary_replica::WatchEntry>),
    mut changes: tokio::sync::watch::Receiver<u64>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    loop {
        if page.is_empty() {
            match tokio::time::timeout(WATCH_HEARTBEAT, changes.changed()).await {
                Ok(Err(_)) => return,
                Ok(Ok(())) => {}
                Err(_) => {
                    if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                        return;
                    }
                }
            }
        } else {
            let mut text = String::new();
            for e in &page {
                let mut line = json!({
                    "marker": e.seq, "collection": e.collection, "key": e.key,
                    "deleted": e.deleted, "version": hex::encode(&e.version),
                    "from_sync": e.from_sync, "conflict": e.conflict,
                });
                if !e.deleted {
                    let (name, value) = value_fields(&e.value);
                    line[name] = value;
                }
                text.push_str(&line.to_string());
                text.push('\n');
                from = e.seq;
            }
            if tx.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
        }
        let d = db.clone();
        // Marked before the read: a commit during it wakes the next wait.
        changes.mark_unchanged();
        page = match api
            .replicas
            .call(move |r| r.watch(&d, from, WATCH_PAGE))
            .await
        {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                let line = json!({ "message": e.to_string(), "code": 410 });
                let _ = tx.send(Ok(Bytes::from(format!("{line}\n")))).await;
                return;
            }
            Err(_) => return,
        };
    }
}

fn node_ids(v: &Value, name: &str) -> Result<Vec<NodeId>, ApiError> {
    let Some(list) = v.get(name) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad(format!("{name} must be a list of node ids")))?;
    list.iter()
        .map(|id| {
            let text = id
                .as_str()
                .ok_or_else(|| bad(format!("{name} must be a list of node ids")))?;
            NodeId::parse(text).map_err(ApiError::from)
        })
        .collect()
}

async fn create_syncgroup(
    State(api): State<DbApi>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let v = json_of(body)?;
    let db = str_field(&v, "db")?.to_string();
    let collections = v
        .get("collections")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("collections must be a list of names"))?
        .iter()
        .map(|c| {
            c.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("collections must be a list of names"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = Spec {
        name: str_field(&v, "name")?.to_string(),
        description: v
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        collections,
        readers: node_ids(&v, "readers")?,
        writers: node_ids(&v, "writers")?,
        admins: node_ids(&v, "admins")?,
    };
    let d = db.clone();
    api.replicas
        .call(move |r| r.create_syncgroup(now_ms(), &d, spec))
        .await??;
    api.track(&db).await;
    Ok((StatusCode::CREATED, axum::Json(json!({}))).into_response())
}

/// An admin named by node id (40 hex digits) or by a multiaddr ending in `/p2p/PEER`.
fn parse_admin(text: &str) -> Result<Admin, ApiError> {
    if !text.starts_with('/') {
        return Ok(Admin::Node(NodeId::parse(text)?));
    }
    let addr: Multiaddr = text
        .parse()
        .map_err(|e| bad(format!("admin {text:?}: {e}")))?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(Admin::Peer(peer, vec![addr])),
        _ => Err(bad(format!(
            "admin {text:?} must end in /p2p/PEER_ID (the node's listen address)"
        ))),
    }
}

async fn join(
    State(api): State<DbApi>,
    Path((db, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let v = json_of(body)?;
    let admin = parse_admin(str_field(&v, "admin")?)?;
    tributary_replica::types::check_name("database", &db)?;
    tributary_replica::types::check_name("syncgroup", &name)?;
    let queries = api.queries.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this API has no network to join through".into(),
        )
    })?;
    let (tx, rx) = oneshot::channel();
    queries
        .send(LoopQuery::ReplicaJoin(db.clone(), name, admin, tx))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is stopping".into(),
            )
        })?;
    let outcome = tokio::time::timeout(JOIN_TIMEOUT + REQUEST_TIMEOUT, rx).await;
    match outcome {
        Ok(Ok(Ok(()))) => {
            api.news(&db);
            Ok(axum::Json(json!({})).into_response())
        }
        Ok(Ok(Err(e))) => {
            use crate::replica::JoinError as J;
            let code = match &e {
                J::NotConnected(_) => StatusCode::BAD_REQUEST,
                J::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                J::Unreachable(_) => StatusCode::GATEWAY_TIMEOUT,
                J::Refused(_) => StatusCode::FORBIDDEN,
                J::Grant(_) => StatusCode::CONFLICT,
            };
            Err(ApiError(code, e.to_string()))
        }
        Ok(Err(_)) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        )),
        Err(_) => Err(ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            "the admin did not answer in time".into(),
        )),
    }
}

async fn leave(State(api): State<DbApi>, Path((db, name)): Path<(String, String)>) -> ApiResult {
    let d = db.clone();
    api.replicas
        .call(move |r| r.leave_syncgroup(now_ms(), &d, &name))
        .await??;
    api.news(&db);
    Ok(axum::Json(json!({})).into_response())
}

async fn eject(
    State(api): State<DbApi>,
    Path((db, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let v = json_of(body)?;
    let member = NodeId::parse(str_field(&v, "member")?)?;
    let d = db.clone();
    api.replicas
        .call(move |r| r.eject(now_ms(), &d, &name, member))
        .await??;
    api.news(&db);
    Ok(axum::Json(json!({})).into_response())
}

fn knowledge_json(k: &std::collections::BTreeMap<NodeId, u64>) -> Value {
    k.iter()
        .map(|(id, g)| (id.to_string(), json!(g)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

async fn get_syncgroup(
    State(api): State<DbApi>,
    Path((db, name)): Path<(String, String)>,
) -> ApiResult {
    let d = db.clone();
    let (info, me) = api
        .replicas
        .call(move |r| r.syncgroup(&d, &name).map(|info| (info, r.id())))
        .await??;
    let mut last = HashMap::new();
    if let Some(q) = &api.queries {
        let (tx, rx) = oneshot::channel();
        if q.send(LoopQuery::ReplicaSyncs(db, tx)).await.is_ok()
            && let Ok(Ok(syncs)) = tokio::time::timeout(Duration::from_secs(5), rx).await
        {
            last = syncs.into_iter().collect();
        }
    }
    let list = |ids: &[NodeId]| ids.iter().map(ToString::to_string).collect::<Vec<_>>();
    let members: Vec<Value> = info
        .members
        .iter()
        .map(|(id, state)| {
            let mut m = json!({ "id": id.to_string(), "state": state.name() });
            if let Some(k) = info.member_knowledge.get(id) {
                m["knowledge"] = knowledge_json(k);
            }
            if let Some(s) = last.get(id) {
                m["last_sync_ms"] = json!(s.at_ms);
                m["last_sync_records"] = json!(s.records);
            }
            m
        })
        .collect();
    let s = &info.spec;
    Ok(axum::Json(json!({
        "spec": {
            "name": s.name, "description": s.description, "collections": s.collections,
            "readers": list(&s.readers), "writers": list(&s.writers), "admins": list(&s.admins),
            "version": info.version,
        },
        "members": members,
        "knowledge": knowledge_json(&info.knowledge),
        "pending": info.pending,
        "joined": info.members.contains(&(me, MemberState::Joined)),
    }))
    .into_response())
}
