//! The coordinator behind a reverse proxy (issue 12): `X-Forwarded-For` and `X-Forwarded-Proto`
//! count only from a peer in `trusted_proxies`. From a trusted proxy, the anonymous limit is per
//! forwarded client (the right-most untrusted address, so a client cannot prepend its way out)
//! and a share link's URL takes the client's scheme; from any other peer (and by default) the
//! same headers change nothing. A node's `upstream_url` is stored and listed, and one that is
//! not such a URL is stored as unknown. On SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api;
use serde_json::{Value, json};

/// These stories have no node, so every request waits for a slot: the address's limit they key
/// is the one on requests waiting (`tests/anonymous_limits.rs` has the one on running sessions,
/// which queues rather than refuses).
const WAITING_LIMIT: &str = "[anonymous]\nmax_waiting_per_address = 2\n";

/// `POST /api/v1/sessions` for title `demo`, anonymously, with `headers`; the status and body.
async fn create(coord: &Coord, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = coord
        .http
        .post(coord.url("/api/v1/sessions"))
        .json(&json!({"title_id": "demo"}));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// A share link of session `s` made with its owner key and `headers`; its URL.
async fn link_url(coord: &Coord, s: &Value, headers: &[(&str, &str)]) -> String {
    let mut r = coord
        .http
        .post(coord.url(&format!(
            "/api/v1/sessions/{}/links",
            s["id"].as_str().unwrap()
        )))
        .bearer_auth(s["owner_key"].as_str().unwrap())
        .json(&json!({"role": "viewer"}));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let v: Value = resp.json().await.unwrap();
    v["url"].as_str().unwrap().to_owned()
}

async fn session_count(coord: &Coord) -> usize {
    let (st, v) = coord.admin("GET", "/api/v1/sessions", None).await;
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().unwrap().len()
}

/// NGINX on this machine is trusted: each forwarded client has its own anonymous limit.
async fn a_trusted_proxy_names_the_client(backend: Backend) {
    let db = fresh_database(&backend, "proxy-trusted").await;
    let toml = format!(
        "trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n{FAST_TIMING}{WAITING_LIMIT}"
    );
    let coord = Coord::start(&db, &toml).await;
    // No node: the sessions wait for a slot, and count towards the address's waiting limit.
    coord.title("demo", "demo", json!({})).await;
    let alice = [("x-forwarded-for", "203.0.113.1")];
    let (st, first) = create(&coord, &alice).await;
    assert_eq!(st, 201, "{first}");
    let (st, v) = create(&coord, &alice).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = create(&coord, &alice).await;
    assert_eq!(st, 429, "Alice's third: {v}");
    // Alice cannot pose as someone else by writing addresses in front of hers: the proxy
    // appends the address it saw, and that one counts.
    let (st, v) = create(&coord, &[("x-forwarded-for", "198.51.100.7, 203.0.113.1")]).await;
    assert_eq!(st, 429, "a prepended address is not the client: {v}");
    // Bob, through two trusted proxies (an inner one at 10.0.0.5), has his own limit.
    let bob = [("x-forwarded-for", "203.0.113.2, 10.0.0.5")];
    for _ in 0..2 {
        let (st, v) = create(&coord, &bob).await;
        assert_eq!(st, 201, "Bob: {v}");
    }
    let (st, v) = create(&coord, &[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!(st, 429, "Bob's third: {v}");
    // A malformed entry where the proxy writes: nothing of the header is believed, and the
    // request counts for the proxy itself (which made none yet).
    let (st, v) = create(
        &coord,
        &[("x-forwarded-for", "203.0.113.1, not-an-address")],
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(session_count(&coord).await, 5);

    // The share link's URL has the scheme the client used, and its Host.
    let https = [("x-forwarded-proto", "https"), ("host", "pxs.example.org")];
    let url = link_url(&coord, &first, &https).await;
    assert!(url.starts_with("https://pxs.example.org/play/"), "{url}");
    let url = link_url(&coord, &first, &[("x-forwarded-proto", "http")]).await;
    assert!(
        url.starts_with(&format!("http://{}/play/", coord.addr)),
        "{url}"
    );
    let url = link_url(&coord, &first, &[]).await;
    assert!(url.starts_with("http://"), "{url}");
}

/// Without `trusted_proxies` (the default) the forwarding headers are anyone's words: every
/// request is the peer's, whatever address or scheme it claims.
async fn spoofed_headers_from_an_untrusted_peer_change_nothing(backend: Backend) {
    let db = fresh_database(&backend, "proxy-untrusted").await;
    let toml = format!("{FAST_TIMING}{WAITING_LIMIT}");
    let coord = Coord::start(&db, &toml).await;
    coord.title("demo", "demo", json!({})).await;
    let (st, first) = create(&coord, &[("x-forwarded-for", "203.0.113.1")]).await;
    assert_eq!(st, 201, "{first}");
    let (st, v) = create(&coord, &[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!(st, 201, "{v}");
    for spoof in ["203.0.113.3", "203.0.113.3, 203.0.113.4", "::1"] {
        let (st, v) = create(&coord, &[("x-forwarded-for", spoof)]).await;
        assert_eq!(st, 429, "{spoof}: one peer, one limit: {v}");
    }
    assert_eq!(
        session_count(&coord).await,
        2,
        "no refused request made a session"
    );
    let url = link_url(&coord, &first, &[("x-forwarded-proto", "https")]).await;
    assert!(
        url.starts_with(&format!("http://{}/play/", coord.addr)),
        "{url}"
    );

    // Trusting another network is not trusting this peer.
    let db = fresh_database(&backend, "proxy-other").await;
    let toml = format!("trusted_proxies = [\"10.0.0.0/8\"]\n{FAST_TIMING}{WAITING_LIMIT}");
    let coord = Coord::start(&db, &toml).await;
    coord.title("demo", "demo", json!({})).await;
    for (i, spoof) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .iter()
        .enumerate()
    {
        let (st, v) = create(
            &coord,
            &[("x-forwarded-for", spoof), ("x-forwarded-proto", "https")],
        )
        .await;
        assert_eq!(st, if i < 2 { 201 } else { 429 }, "{spoof}: {v}");
    }
}

/// The node's `upstream_url` from its hello is listed with the node; a hello with one that is
/// not such a URL links all the same, with the upstream unknown.
async fn the_nodes_upstream_is_listed(backend: Backend) {
    let db = fresh_database(&backend, "proxy-upstream").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    let node = |name: &str| {
        let coord = &coord;
        let name = name.to_owned();
        async move {
            let (st, v) = coord
                .admin("GET", &format!("/api/v1/nodes/{name}"), None)
                .await;
            assert_eq!(st, 200, "{v}");
            serde_json::from_value::<api::Node>(v).unwrap()
        }
    };
    let mut h = hello("gpu-1", vec![app_info("demo")], 1);
    h.upstream_url = Some("http://10.0.0.11:8081/".into());
    let (_ws1, _) = node_link_with(&coord, h).await;
    assert_eq!(
        node("gpu-1").await.upstream_url.as_deref(),
        Some("http://10.0.0.11:8081")
    );
    let mut h = hello("gpu-2", vec![app_info("demo")], 1);
    h.upstream_url = Some("http://10.0.0.12:8081;}\n server { listen 1".into());
    let (_ws2, _) = node_link_with(&coord, h).await;
    let two = node("gpu-2").await;
    assert_eq!(two.upstream_url, None, "a made-up upstream is not stored");
    assert_eq!(two.state, api::NodeState::Online, "the node itself links");
    // A user who may list nodes sees it too (and the list says the same as the node).
    let (st, v) = coord.admin("GET", "/api/v1/nodes", None).await;
    assert_eq!(st, 200, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items[0]["upstream_url"], "http://10.0.0.11:8081");
    assert_eq!(items[1]["upstream_url"], Value::Null);
    // A later hello without one clears it.
    drop(_ws1);
    let (_ws1, _) = node_link_with(&coord, hello("gpu-1", vec![app_info("demo")], 1)).await;
    wait_until(std::time::Duration::from_secs(10), || async {
        match node("gpu-1").await.upstream_url {
            None => Ok(()),
            Some(u) => Err(format!("still {u}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_forwards_the_clients_address_and_scheme() {
    for b in backends() {
        a_trusted_proxy_names_the_client(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    for b in backends() {
        spoofed_headers_from_an_untrusted_peer_change_nothing(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_upstream_url_is_stored_and_listed() {
    for b in backends() {
        the_nodes_upstream_is_listed(b).await;
    }
}
