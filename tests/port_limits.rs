//! The review port is bounded: the real binary, flooded with more connections and more
//! concurrent 4 MiB bodies than its limits allow, stays within a stated memory, keeps
//! answering the reviews of a client that behaves like the API server, and exits 0 on
//! SIGTERM afterwards. (A test binary of its own: the flood takes both cores for a while.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::binary::*;
use common::*;

/// What the default limits let a flood add to the idle process: 4 large bodies of 4 MiB,
/// 128 ordinary ones of 64 KiB, and 128 connections' TLS and HTTP buffers (see README,
/// Security); and the peak that leaves under the Deployment's 128 Mi limit.
const STATED_FLOOD_GROWTH_MIB: u64 = 48;
const STATED_PEAK_RSS_MIB: u64 = 96;
const FLOODERS: usize = 320;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A review just under the 4 MiB limit: a plain claim whose oldObject carries padding.
fn big_review() -> Vec<u8> {
    let mut review = create(claim("big", None, "1Gi"));
    review["request"]["oldObject"] = json!({"padding": "x".repeat(4 * 1024 * 1024 - 4096)});
    serde_json::to_vec(&review).expect("json")
}

fn request(body: &[u8], keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut request = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Reads one HTTP/1.1 response with a Content-Length; returns its status.
async fn read_response<S: AsyncReadExt + Unpin>(stream: &mut S) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_limits_is_held_in_bounded_memory_while_reviews_are_answered() {
    let mut webhook = Webhook::start(&[]).await;
    let pid = webhook.child.id();
    let config = tls_client(&webhook.ca(), &[&rustls::version::TLS13]);
    let connect = |config: Arc<rustls::ClientConfig>, addr: String| async move {
        let tcp = TcpStream::connect(&addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .ok()
    };

    // The API server's connection, open before the flood, as a real one would be.
    let mut apiserver = connect(Arc::clone(&config), webhook.addr.clone())
        .await
        .expect("the API server connects");
    let plain = serde_json::to_vec(&create(claim("plain", None, "1Gi"))).expect("json");
    let idle_rss = status_kib(pid, "VmRSS:");

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let big = Arc::new(big_review());
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (config, addr, big) = (Arc::clone(&config), webhook.addr.clone(), Arc::clone(&big));
            let (stop, sent, answered) =
                (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&answered));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(mut tls)) = tokio::time::timeout(
                        Duration::from_secs(5),
                        connect(Arc::clone(&config), addr.clone()),
                    )
                    .await
                    else {
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        if tls.write_all(&request(&big, true)).await.is_err() {
                            break;
                        }
                        match read_response(&mut tls).await {
                            Some(_) => answered.fetch_add(1, Ordering::Relaxed),
                            None => break,
                        };
                    }
                }
            })
        })
        .collect();

    // The API server's reviews during the flood: every one answered, allowed.
    let flood_started = Instant::now();
    let (mut ok, mut slowest) = (0, Duration::ZERO);
    let mut peak_connections = 0;
    while flood_started.elapsed() < Duration::from_secs(8) {
        let started = Instant::now();
        apiserver
            .write_all(&request(&plain, true))
            .await
            .expect("the API server's review is sent");
        let status = tokio::time::timeout(Duration::from_secs(10), read_response(&mut apiserver))
            .await
            .expect("answered within the API server's patience")
            .expect("a response");
        assert_eq!(status, 200);
        ok += 1;
        slowest = slowest.max(started.elapsed());
        peak_connections = peak_connections.max(sockets_of(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let peak_rss = status_kib(pid, "VmHWM:");
    for flooder in flooders {
        flooder.abort();
    }
    eprintln!(
        "[limits] {FLOODERS} flooding clients, {} bodies of 4 MiB sent, {} answered; \
         {ok} API-server reviews answered (slowest {slowest:?}); sockets held by the server at most {peak_connections}; \
         RSS idle {} MiB, peak {} MiB",
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
        idle_rss / 1024,
        peak_rss / 1024
    );
    assert!(
        ok >= 10,
        "the API server's reviews were answered during the flood"
    );
    assert!(
        answered.load(Ordering::Relaxed) > 8,
        "the flood was served, not just refused"
    );
    assert!(
        peak_connections <= 128 + 8,
        "at most --max-connections accepted, plus the listeners ({peak_connections} sockets)"
    );
    assert!(
        peak_rss.saturating_sub(idle_rss) / 1024 <= STATED_FLOOD_GROWTH_MIB,
        "the flood added {} MiB, over the stated {STATED_FLOOD_GROWTH_MIB} MiB",
        peak_rss.saturating_sub(idle_rss) / 1024
    );
    assert!(
        peak_rss / 1024 <= STATED_PEAK_RSS_MIB,
        "peak RSS {} MiB over the stated {STATED_PEAK_RSS_MIB} MiB",
        peak_rss / 1024
    );

    webhook.terminate();
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(status) = webhook.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the webhook did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "exit status after the flood");
}

/// Sockets the server process holds: the connections it has accepted (plus its two
/// listeners and a few of its own), not those still waiting in the listen backlog.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}
