//! Our accept loop for tide apps (the issuer's and the simulator's), over async-h1.
//!
//! - Every connection gets TCP_NODELAY: async-h1 writes a response's head and body separately,
//!   and with Nagle's algorithm on the body waits for the client's delayed ACK (about 40 ms).
//! - Every phase of a request has a deadline: waiting for and reading the head
//!   ([`ConnectionLimits::head_timeout`], which also bounds a keep-alive connection's idle time),
//!   and reading the body, handling and answering ([`ConnectionLimits::body_timeout`]). A
//!   connection past its deadline is closed. async-h1 alone would wait forever for a body that
//!   was announced and never sent.
//! - A refused request (any 4xx or 5xx) closes its connection at once: the rest of its body is
//!   never waited for.
//! - At most [`ConnectionLimits::connections_max`] connections are open. A new one beyond that,
//!   or an accept refused for lack of file descriptors, closes the oldest: whoever holds many idle
//!   or half-sent connections loses them, and a new caller (`/health`) is still answered.

use futures::future::{AbortHandle, Abortable};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Bounds on connections and on how long each phase of a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once; beyond it the oldest is closed. At least 1.
    pub connections_max: usize,
    /// From the end of the previous answer (or the accept) to the end of the next request head.
    pub head_timeout: Duration,
    /// From the end of the head to the end of the answer: reading the body, handling, writing.
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            connections_max: 200,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionLimits {
    /// `Err` with the reason when a limit is unusable (zero).
    pub fn check(&self) -> Result<(), String> {
        if self.connections_max == 0 {
            return Err("the connection limit must be at least 1".into());
        }
        if self.head_timeout.is_zero() || self.body_timeout.is_zero() {
            return Err("request timeouts must be positive".into());
        }
        Ok(())
    }
}

/// Serves `app` on `listener` with the default [`ConnectionLimits`] until the future is dropped.
pub async fn serve_app<State>(
    listener: async_std::net::TcpListener,
    app: tide::Server<State>,
) -> std::io::Result<()>
where
    State: Clone + Send + Sync + 'static,
{
    serve_app_with(listener, app, ConnectionLimits::default()).await
}

/// Serves `app` on `listener` under `limits` until the future is dropped. A failed accept (too
/// many open files) closes the oldest connection and is retried; it never ends the server.
pub async fn serve_app_with<State>(
    listener: async_std::net::TcpListener,
    app: tide::Server<State>,
    limits: ConnectionLimits,
) -> std::io::Result<()>
where
    State: Clone + Send + Sync + 'static,
{
    let open = OpenConnections::default();
    let mut next_id: u64 = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed; closing the oldest connection and retrying");
                open.close_oldest();
                async_std::task::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id = next_id.wrapping_add(1);
        let id = next_id;
        while open.len() >= limits.connections_max {
            if !open.close_oldest() {
                break;
            }
        }
        let (handle, registration) = AbortHandle::new_pair();
        open.insert(id, handle);
        let app = app.clone();
        let open_here = open.clone();
        async_std::task::spawn(async move {
            let served = Abortable::new(connection(stream, peer, app, limits), registration).await;
            open_here.remove(id);
            if let Ok(Err(e)) = served {
                tracing::debug!(error = %e, %peer, "http: connection ended with an error");
            }
        });
    }
}

/// One connection: async-h1's request loop raced against the current phase's deadline.
async fn connection<State>(
    stream: async_std::net::TcpStream,
    peer: std::net::SocketAddr,
    app: tide::Server<State>,
    limits: ConnectionLimits,
) -> Result<(), String>
where
    State: Clone + Send + Sync + 'static,
{
    let local = stream.local_addr().ok();
    let deadline = Deadline::after(limits.head_timeout);
    let io = Conn {
        inner: stream,
        closing: Arc::new(AtomicBool::new(false)),
    };
    let closing = io.closing.clone();
    let phases = deadline.clone();
    let requests = async_h1::accept(io, move |mut request| {
        let app = app.clone();
        let closing = closing.clone();
        let phases = phases.clone();
        phases.extend(limits.body_timeout);
        async move {
            request.set_local_addr(local);
            request.set_peer_addr(Some(peer));
            let mut response: tide::http::Response = app.respond(request).await?;
            if response.status().is_client_error() || response.status().is_server_error() {
                // Whatever of the body is still unsent is not waited for: async-h1 would drain it.
                response.insert_header("Connection", "close");
                closing.store(true, Ordering::SeqCst);
            }
            // Writing this answer and the next request's head share one deadline.
            phases.extend(limits.head_timeout);
            Ok(response)
        }
    });
    match futures::future::select(Box::pin(requests), Box::pin(deadline.expired())).await {
        futures::future::Either::Left((served, _)) => served.map_err(|e| e.to_string()),
        futures::future::Either::Right(((), _)) => {
            tracing::debug!(%peer, "http: request deadline passed; connection closed");
            Ok(())
        }
    }
}

/// When the current phase of a connection must be over. Shared by the request loop (which moves
/// it on at each phase) and the watchdog (which closes the connection once it has passed).
#[derive(Clone)]
struct Deadline {
    at: Arc<Mutex<Instant>>,
}

impl Deadline {
    fn after(duration: Duration) -> Deadline {
        Deadline {
            at: Arc::new(Mutex::new(Instant::now() + duration)),
        }
    }

    fn extend(&self, duration: Duration) {
        *self.at.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now() + duration;
    }

    /// Resolves once the deadline has passed without being moved on.
    async fn expired(self) {
        loop {
            let at = *self.at.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if now >= at {
                return;
            }
            async_std::task::sleep(at.saturating_duration_since(now)).await;
        }
    }
}

/// The open connections, oldest first, each with the handle that closes it.
#[derive(Clone, Default)]
struct OpenConnections {
    handles: Arc<Mutex<BTreeMap<u64, AbortHandle>>>,
}

impl OpenConnections {
    fn len(&self) -> usize {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn insert(&self, id: u64, handle: AbortHandle) {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, handle);
    }

    fn remove(&self, id: u64) {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Closes the oldest open connection; `false` if there is none.
    fn close_oldest(&self) -> bool {
        let oldest = self
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_first();
        match oldest {
            Some((_, handle)) => {
                handle.abort();
                true
            }
            None => false,
        }
    }
}

/// The TCP stream as async-h1 sees it. Once `closing` is set (a refused request), reads end at
/// once, so the unread rest of a body is never waited for.
#[derive(Clone)]
struct Conn {
    inner: async_std::net::TcpStream,
    closing: Arc<AtomicBool>,
}

impl futures::io::AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closing.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(0));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl futures::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
