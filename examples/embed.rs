//! Mounting Herald into an existing axum application and publishing from its
//! handlers.
//!
//! ```text
//! HERALD_JWT_SECRET=change-me-to-a-long-random-secret cargo run --example embed
//! # in another shell: watch the stream, then trigger the app's handler
//! TOKEN=$(HERALD_JWT_SECRET=change-me-to-a-long-random-secret cargo run -q -- token --sub 42 --subscribe 'orders')
//! curl -N "http://127.0.0.1:3000/realtime/events?channel=orders&token=$TOKEN"
//! curl -X POST http://127.0.0.1:3000/orders
//! ```
//!
//! `POST /orders` stands for any handler of the app: it does its work, then
//! publishes an event to the `orders` channel and a private one to user 42.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use herald::{ChannelName, Config, Hub, NewEvent, Node};
use serde_json::json;

async fn create_order(State(hub): State<Hub>) -> Result<String, String> {
    let order = json!({"id": rand_id(), "status": "created"});
    let channel = ChannelName::new("orders").map_err(|e| e.to_string())?;
    let event = NewEvent::json(channel.clone(), &order)
        .map_err(|e| e.to_string())?
        .with_type("order.created");
    let accepted = hub.publish(event).await.map_err(|e| e.to_string())?;
    let note = NewEvent::json(channel, &json!({"text": "your order was created"}))
        .map_err(|e| e.to_string())?;
    hub.send_to_user("42", note)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("order created, event {}\n", accepted.id))
}

fn rand_id() -> u32 {
    std::process::id()
        ^ std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.subsec_nanos())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The same configuration the binary reads: file (optional) and HERALD_* variables.
    let config = Config::load(None)?;
    let node = Node::new(config)?;
    let app = Router::new()
        .route("/orders", post(create_order))
        .with_state(node.hub().clone())
        .nest("/realtime", node.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("app on http://127.0.0.1:3000, hub under /realtime");
    // `herald::serve` would also apply per-address limits and close stalled
    // readers at once; plain `axum::serve` works too.
    let shutdown = node.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.shutdown();
        })
        .await?;
    Ok(())
}
