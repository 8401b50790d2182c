//! Our accept loop for tide apps (the issuer's and the simulator's). tide's own leaves Nagle's
//! algorithm on, and async-h1 writes a response's head and body separately: the body then waits
//! for the client's delayed ACK, about 40 ms per request. Here every connection gets TCP_NODELAY.

use std::time::Duration;

/// Serves `app` on `listener` until the future is dropped. A failed accept (too many open files)
/// is logged and retried after a pause; it never ends the server.
pub async fn serve_app<State>(
    listener: async_std::net::TcpListener,
    app: tide::Server<State>,
) -> std::io::Result<()>
where
    State: Clone + Send + Sync + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed; retrying");
                async_std::task::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        async_std::task::spawn(async move {
            let local = stream.local_addr().ok();
            let served = async_h1::accept(stream, |mut request| {
                let app = app.clone();
                async move {
                    request.set_local_addr(local);
                    request.set_peer_addr(Some(peer));
                    app.respond(request).await
                }
            })
            .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "http: connection ended with an error");
            }
        });
    }
}
