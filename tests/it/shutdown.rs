//! Graceful shutdown: streams end with a reconnect hint and never hold the hub.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixture::{TestHub, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_streams_do_not_delay_shutdown_past_the_grace_period() {
    let _ = rlimit::increase_nofile_limit(8192);
    let grace = Duration::from_secs(3);
    let hub = TestHub::builder()
        .config(|c| c.shutdown.grace = grace)
        .start()
        .await;
    let token = hub.token(None, &["a"], &[]);
    let request = format!("GET /events?channel=a&token={token} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        streams.push(s);
    }
    // Every stream is live once it has its `connected` event.
    for s in &mut streams {
        let mut buf = vec![0u8; 1024];
        let mut seen = String::new();
        while !seen.contains("event: connected") {
            let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert_eq!(hub.node.stats().connections, 1000);
    let addr = hub.addr;
    let started = Instant::now();
    hub.stop().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < grace + Duration::from_secs(2),
        "shutdown took {took:?}"
    );
    // The streams were told to reconnect, and closed.
    for s in streams.iter_mut().take(20) {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&rest);
        assert!(text.contains("event: shutdown"), "{text}");
        assert!(text.contains("retry: "), "{text}");
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_stalled_stream_cannot_hold_shutdown_beyond_the_grace_period() {
    let grace = Duration::from_millis(500);
    let hub = TestHub::builder()
        .config(|c| {
            c.shutdown.grace = grace;
            c.limits.queue_size = 100_000;
        })
        .start()
        .await;
    let token = hub.token(None, &["a"], &[]);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(hub.addr).await.unwrap();
    stalled
        .write_all(
            format!("GET /events?channel=a&token={token} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    eventually("the stream to be open", || {
        hub.node.stats().connections >= 1
    })
    .await;
    // Fill the socket buffers so that the hub's writes block.
    let pad = "x".repeat(60_000);
    for _ in 0..120 {
        hub.publish(serde_json::json!({"channel": "a", "data": pad}))
            .await;
    }
    let started = Instant::now();
    hub.stop().await.unwrap();
    assert!(started.elapsed() < grace + Duration::from_secs(2));
}
