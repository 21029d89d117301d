//! The HTTP API end to end on 127.0.0.1 (port 0): bytes in and out with ranges, chunks in and
//! out, and each kind of bad input with its status.

mod common;

use common::{Node, agent};

fn body(mut response: ureq::http::Response<ureq::Body>) -> (u16, Vec<u8>) {
    let status = response.status().as_u16();
    (
        status,
        response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .expect("body"),
    )
}

#[test]
fn bytes_and_chunks_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let http = agent();
    let health = body(
        http.get(format!("{}/health", node.base))
            .call()
            .expect("health"),
    );
    assert_eq!(health.0, 200);

    // A file of (i mod 255): bee's reference for 4096 bytes.
    let file: Vec<u8> = (0..4096).map(|i| (i % 255) as u8).collect();
    let (status, reply) = body(
        http.post(format!("{}/bytes", node.base))
            .send(&file[..])
            .expect("post bytes"),
    );
    assert_eq!(status, 201);
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("json");
    assert_eq!(
        reply["reference"],
        "c10090961e7682a10890c334d759a28426647141213abda93b096b892824d2ef"
    );

    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (_, reply) = body(
        http.post(format!("{}/bytes", node.base))
            .send(&big[..])
            .expect("post big"),
    );
    let reference = serde_json::from_slice::<serde_json::Value>(&reply).expect("json")["reference"]
        .as_str()
        .expect("ref")
        .to_owned();
    let (status, got) = body(
        http.get(format!("{}/bytes/{reference}", node.base))
            .call()
            .expect("get"),
    );
    assert_eq!((status, got.len()), (200, big.len()));
    assert!(got == big);
    let ranged = http
        .get(format!("{}/bytes/{reference}", node.base))
        .header("Range", "bytes=4090-8200")
        .call()
        .expect("range");
    assert_eq!(
        ranged
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some("bytes 4090-8200/300000")
    );
    let (status, got) = body(ranged);
    assert_eq!(status, 206);
    assert!(got == big[4090..=8200]);
    let (status, got) = body(
        http.get(format!("{}/bytes/{reference}", node.base))
            .header("Range", "bytes=-10")
            .call()
            .expect("suffix"),
    );
    assert_eq!((status, got.as_slice()), (206, &big[big.len() - 10..]));
    let (status, _) = body(
        http.get(format!("{}/bytes/{reference}", node.base))
            .header("Range", "bytes=400000-")
            .call()
            .expect("416"),
    );
    assert_eq!(status, 416);

    // Chunks.
    let mut chunk = 3u64.to_le_bytes().to_vec();
    chunk.extend_from_slice(b"foo");
    let (status, reply) = body(
        http.post(format!("{}/chunks", node.base))
            .send(&chunk[..])
            .expect("post chunk"),
    );
    assert_eq!(status, 201);
    let foo = "2387e8e7d8a48c2a9339c97c1dc3461a9a7aa07e994c5cb8b38fd7c1b3e6ea48";
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply).expect("json")["reference"],
        foo
    );
    let (status, got) = body(
        http.get(format!("{}/chunks/{foo}", node.base))
            .call()
            .expect("get chunk"),
    );
    assert_eq!((status, got), (200, chunk.clone()));
    let wrong = "0000e8e7d8a48c2a9339c97c1dc3461a9a7aa07e994c5cb8b38fd7c1b3e6ea48";
    let (status, reply) = body(
        http.post(format!("{}/chunks/{wrong}", node.base))
            .send(&chunk[..])
            .expect("mismatch"),
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
    let (status, _) = body(
        http.get(format!("{}/chunks/{wrong}", node.base))
            .call()
            .expect("not stored"),
    );
    assert_eq!(status, 404, "a refused chunk was not stored");
    let (status, reply) = body(
        http.post(format!("{}/chunks", node.base))
            .send(&vec![0u8; 5000][..])
            .expect("too big"),
    );
    assert_eq!(status, 413);
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("a JSON error");
    assert_eq!(reply["code"], 413, "{reply}");
    assert!(reply["message"].is_string(), "{reply}");

    // Unknown routes and methods answer in the same JSON shape.
    for (status, reply) in [
        body(
            http.get(format!("{}/nope", node.base))
                .call()
                .expect("unknown route"),
        ),
        body(
            http.delete(format!("{}/bytes", node.base))
                .call()
                .expect("wrong method"),
        ),
    ] {
        let reply: serde_json::Value = serde_json::from_slice(&reply).expect("a JSON error");
        assert_eq!(reply["code"], status, "{reply}");
        assert!(status == 404 || status == 405, "{status}");
    }

    // Bad references and missing data.
    let (status, _) = body(
        http.get(format!("{}/bytes/xyz", node.base))
            .call()
            .expect("bad ref"),
    );
    assert_eq!(status, 400);
    let missing = "11".repeat(32);
    let (status, reply) = body(
        http.get(format!("{}/bytes/{missing}", node.base))
            .call()
            .expect("missing"),
    );
    assert_eq!(status, 404);
    assert!(
        String::from_utf8_lossy(&reply).contains(&missing),
        "the 404 names the missing chunk"
    );
}

/// Clients that start an upload and stall hold a transfer slot each; past
/// `MAX_TRANSFERS` the node answers `503` at once instead of tying up more threads.
#[test]
fn stalled_uploads_take_a_bounded_number_of_transfer_slots() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let addr = node.base.trim_start_matches("http://").to_owned();
    let stalled: Vec<std::net::TcpStream> = (0..tributary_node::api::MAX_TRANSFERS)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            write!(
                s,
                "POST /bytes HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nfirst bytes"
            )
            .expect("write");
            s
        })
        .collect();
    // Let the node take them all in.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, reply) = body(
        agent()
            .post(format!("{}/bytes", node.base))
            .send(&b"hello"[..])
            .expect("answered"),
    );
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&reply));
    // A stalled client that goes away frees its slot.
    drop(stalled);
    let took = common::eventually(std::time::Duration::from_secs(10), "a slot frees", || {
        let (status, _) = body(
            agent()
                .post(format!("{}/bytes", node.base))
                .send(&b"hello"[..])
                .expect("answered"),
        );
        status == 201
    });
    println!("slots free again {took:?} after the stalled clients left");
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("w");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// The routes a bee client reads, in bee's shapes (bee's `openapi/Swarm.yaml`, API 8.1.0):
/// every field its schemas name is there, with its type.
#[test]
fn bee_clients_find_the_fields_they_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let health = node.get_json("/health");
    assert_eq!(health["status"], "ok");
    assert!(health["version"].is_string() && health["apiVersion"].is_string());
    assert_eq!(node.get_json("/readiness")["status"], "ready");

    let info = node.get_json("/node");
    assert_eq!(info["beeMode"], "full");
    assert_eq!(info["chequebookEnabled"], false);
    assert_eq!(info["swapEnabled"], false);

    let a = node.get_json("/addresses");
    assert_eq!(a["overlay"], info["overlay"]);
    assert!(a["underlay"].as_array().is_some_and(|u| !u.is_empty()));
    assert_eq!(a["ethereum"].as_str().map(str::len), Some(40));
    assert_eq!(a["publicKey"].as_str().map(str::len), Some(66));
    assert!(a["chain_address"].is_string() && a["pssPublicKey"].is_string());

    let t = node.get_json("/topology");
    for field in [
        "baseAddr",
        "timestamp",
        "reachability",
        "networkAvailability",
    ] {
        assert!(t[field].is_string(), "topology.{field}: {t}");
    }
    for field in ["population", "connected", "nnLowWatermark", "depth"] {
        assert!(t[field].is_u64(), "topology.{field}: {t}");
    }
    assert_eq!(t["networkAvailability"], "Unavailable", "no peer yet");
    let bin = &t["bins"]["bin_0"];
    assert!(bin["population"].is_u64() && bin["connectedPeers"].is_array());
    assert!(node.get_json("/peers")["peers"].is_array());

    // Tags: made by POST /tags, counted on by an upload naming it, listed, paged.
    let http = agent();
    let (status, made) = body(
        http.post(format!("{}/tags", node.base))
            .send_empty()
            .expect("tag"),
    );
    assert_eq!(status, 201);
    let made: serde_json::Value = serde_json::from_slice(&made).expect("json");
    let uid = made["uid"].as_u64().expect("uid");
    assert!(made["startedAt"].is_string());
    let (status, _) = body(
        http.post(format!("{}/bytes", node.base))
            .header("swarm-tag", uid.to_string())
            .header("swarm-postage-batch-id", "00".repeat(32))
            .send(&[7u8; 10_000][..])
            .expect("post"),
    );
    assert_eq!(status, 201);
    let tag = node.get_json(&format!("/tags/{uid}"));
    assert_eq!(tag["split"], 4, "three leaves and a root: {tag}");
    assert_eq!(tag["stored"], 4);
    assert_eq!(tag["uid"], uid);
    for field in ["seen", "sent", "synced"] {
        assert!(tag[field].is_u64(), "{field}: {tag}");
    }
    let (status, _) = body(
        http.post(format!("{}/bytes", node.base))
            .header("swarm-tag", "999999")
            .send(&b"x"[..])
            .expect("post"),
    );
    assert_eq!(status, 404, "an upload naming a tag that does not exist");
    assert_eq!(
        node.get_json("/tags?limit=1")["tags"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let (status, _) = body(
        http.get(format!("{}/tags?limit=0", node.base))
            .call()
            .expect("get"),
    );
    assert_eq!(status, 400);
}
