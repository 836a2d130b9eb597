#![allow(clippy::unwrap_used)]
//! The player port's HTTP side: static files with a homepage, and HTTPS.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

fn temp_dir(name: &str) -> PathBuf {
    pxs_test_support::scratch_dir(name)
}

#[tokio::test]
async fn static_files_are_served_with_the_homepage_at_the_root() {
    let root = temp_dir("www");
    std::fs::write(root.join("player.html"), "<h1>player</h1>").unwrap();
    std::fs::write(root.join("app.js"), "console.log(1)").unwrap();
    std::fs::write(root.parent().unwrap().join("secret.txt"), "no").unwrap();
    let server = start(Options {
        serve: Some(true),
        http_root: Some(root.clone()),
        ..options()
    })
    .await;
    let base = format!("http://{}", server.addrs().player);
    let home = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(home.status().as_u16(), 200);
    assert_eq!(home.text().await.unwrap(), "<h1>player</h1>");
    assert_eq!(
        reqwest::get(format!("{base}/app.js"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "console.log(1)"
    );
    assert_eq!(
        reqwest::get(format!("{base}/missing.js"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    let traversal = reqwest::get(format!("{base}/../secret.txt")).await.unwrap();
    assert_ne!(traversal.text().await.unwrap(), "no");
    let encoded = reqwest::get(format!("{base}/%2e%2e/secret.txt"))
        .await
        .unwrap();
    assert_ne!(encoded.text().await.unwrap(), "no");
    // The WebSocket still upgrades on the same port.
    let mut p = connect(server.addrs().player, "/").await;
    assert_eq!(p.recv().await["type"], "config");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn players_connect_over_https() {
    let dir = temp_dir("tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("player.html"), "secure").unwrap();
    let server = start(Options {
        https_port: Some(0),
        ssl_cert_path: Some(dir.join("cert.pem")),
        ssl_key_path: Some(dir.join("key.pem")),
        serve: Some(true),
        http_root: Some(dir.clone()),
        ..options()
    })
    .await;
    let https = server.addrs().https.expect("https listener");

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", https)
        .build()
        .unwrap();
    let body = client
        .get(format!("https://localhost:{}/", https.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "secure");

    // A player WebSocket over TLS.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        format!("wss://localhost:{}/", https.port()),
        tcp,
        None,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(tls))),
    )
    .await
    .unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains(r#""type":"config""#));
    ws.send(Message::Text(r#"{"type":"ping","time":3}"#.into()))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().to_text().unwrap(),
        r#"{"type":"pong","time":3}"#
    );
    server.shutdown().await.unwrap();
}
