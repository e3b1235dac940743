//! What one client may hold: every connection is registered, so that
//! neither many clients nor slow ones can take the file descriptors the pool
//! needs or the memory of old `/metrics` bodies.
//!
//! - **Connections are capped** ([`Registry::admit`]): at the cap, a new
//!   connection closes the one that has been quiet longest (no byte read or
//!   written), so idle sockets cannot lock scrapers out, and the process
//!   keeps file descriptors for its pool. The cap is lowered to what the
//!   open-file limit leaves after [`FD_RESERVE`].
//! - **A response must be written within the write timeout** after its
//!   request was read ([`Guarded`], under TLS, so records count too);
//!   otherwise the connection ends and hyper drops what it still buffered.
//! - **`/metrics` responses being written are capped**
//!   ([`Registry::start_scrape`]): a stalled reader keeps its body version
//!   alive until the write completes, and new versions are published every
//!   few seconds, so without a cap N stalled readers pin N bodies. Beyond the
//!   cap, the quietest scrape in flight is cut. A scrape counts from the
//!   moment its body is handed over until hyper has flushed the last byte of
//!   it to the socket.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// File descriptors kept out of the connection cap: the pool (at most 32
/// sessions), the leader's session, the listener, logs, `/proc` reads for
/// the process metrics, the web configuration file and the runtime's own.
pub const FD_RESERVE: u64 = 100;

/// The connection cap: `configured`, or what the open-file limit leaves
/// after [`FD_RESERVE`] if that is less (at least 1).
pub fn cap(configured: usize) -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => configured.min(soft.saturating_sub(FD_RESERVE).max(1) as usize),
        Err(_) => configured,
    }
}

/// Every open connection, and which of them are writing a `/metrics` body.
pub struct Registry {
    max_connections: usize,
    max_scrapes: usize,
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Arc<Conn>>,
}

/// One connection's shared state: its task, its IO and its bodies see it.
pub struct Conn {
    id: u64,
    epoch: Instant,
    /// Milliseconds since the registry's epoch of the last byte read or written.
    active: AtomicU64,
    /// When the response being written must be done (ms since epoch; 0: none).
    deadline: AtomicU64,
    /// A `/metrics` body is being written.
    scraping: AtomicBool,
    /// hyper has taken the whole body; the next completed flush ends the scrape.
    body_done: AtomicBool,
    abort: Notify,
}

impl Conn {
    fn now(&self) -> u64 {
        // At least 1, so that 0 can mean "no deadline".
        (Instant::now() - self.epoch).as_millis() as u64 + 1
    }

    fn touch(&self) {
        self.active.store(self.now(), Ordering::Relaxed);
    }

    /// A request was read: its response must be written within `timeout`.
    pub fn request(&self, timeout: Duration) {
        self.touch();
        self.deadline
            .store(self.now() + timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Completes when the registry closes this connection.
    pub async fn aborted(&self) {
        self.abort.notified().await
    }

    fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }

    fn flushed(&self) {
        if self.body_done.swap(false, Ordering::AcqRel) {
            self.scraping.store(false, Ordering::Release);
        }
    }
}

/// Removes its connection from the registry when the connection's task ends.
pub struct Admitted {
    registry: Arc<Registry>,
    pub conn: Arc<Conn>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.registry.lock().conns.remove(&self.conn.id);
    }
}

impl Registry {
    pub fn new(max_connections: usize, max_scrapes: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max_connections: max_connections.max(1),
            max_scrapes: max_scrapes.max(1),
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection; at the cap, first closes the quietest.
    pub fn admit(self: &Arc<Self>) -> Admitted {
        let mut inner = self.lock();
        while inner.conns.len() >= self.max_connections {
            let Some(id) = quietest(&inner.conns, |_| true) else {
                break;
            };
            if let Some(c) = inner.conns.remove(&id) {
                tracing::debug!("connection limit reached: closing the connection quiet longest");
                c.abort.notify_one();
            }
        }
        inner.next += 1;
        let conn = Arc::new(Conn {
            id: inner.next,
            epoch: self.epoch,
            active: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            scraping: AtomicBool::new(false),
            body_done: AtomicBool::new(false),
            abort: Notify::new(),
        });
        conn.touch();
        inner.conns.insert(conn.id, conn.clone());
        Admitted {
            registry: self.clone(),
            conn,
        }
    }

    /// `conn` starts writing a `/metrics` body: beyond the cap, the quietest
    /// other scrape in flight is cut. The returned body ends the scrape once
    /// hyper has taken it and flushed it.
    pub fn start_scrape(&self, conn: &Arc<Conn>, body: Vec<Bytes>) -> Tracked {
        conn.body_done.store(false, Ordering::Release);
        conn.scraping.store(true, Ordering::Release);
        let mut inner = self.lock();
        loop {
            let writing = inner
                .conns
                .values()
                .filter(|c| c.scraping.load(Ordering::Acquire))
                .count();
            if writing <= self.max_scrapes {
                break;
            }
            let victim = quietest(&inner.conns, |c| c.id != conn.id && c.scraping.load(Ordering::Acquire));
            let Some(c) = victim.and_then(|id| inner.conns.remove(&id)) else {
                break;
            };
            tracing::debug!("too many /metrics responses in flight: cutting the one quiet longest");
            c.scraping.store(false, Ordering::Release);
            c.abort.notify_one();
        }
        Tracked::parts(body, Some(conn.clone()))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

fn quietest(conns: &HashMap<u64, Arc<Conn>>, pick: impl Fn(&Conn) -> bool) -> Option<u64> {
    conns
        .values()
        .filter(|c| pick(c))
        .min_by_key(|c| (c.active.load(Ordering::Relaxed), c.id))
        .map(|c| c.id)
}

/// A response body, written as its parts in order (one frame each, with
/// the total length known up front); a `/metrics` one tells its connection
/// when hyper is done with it.
pub struct Tracked {
    parts: std::collections::VecDeque<Bytes>,
    left: u64,
    conn: Option<Arc<Conn>>,
}

impl Tracked {
    pub fn plain(body: Bytes) -> Tracked {
        Tracked::parts(vec![body], None)
    }

    /// `parts`, of `/metrics` for `conn` if given.
    pub fn parts(parts: Vec<Bytes>, conn: Option<Arc<Conn>>) -> Tracked {
        let parts: std::collections::VecDeque<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        Tracked {
            left: parts.iter().map(|p| p.len() as u64).sum(),
            parts,
            conn,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // hyper drops a body after queueing its last frame (or, for HEAD,
        // without polling it): from here the scrape ends at the next flush.
        if let Some(c) = &self.conn {
            c.body_done.store(true, Ordering::Release);
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.parts.pop_front();
        if let Some(p) = &next {
            self.left -= p.len() as u64;
        }
        Poll::Ready(next.map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// The TCP stream of a connection: records activity for the registry, and
/// fails a write once the response's deadline has passed, waking itself at
/// the deadline when the socket is full (else a client that never reads
/// would leave the write pending for ever).
pub struct Guarded {
    io: TcpStream,
    conn: Arc<Conn>,
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl Guarded {
    pub fn new(io: TcpStream, conn: Arc<Conn>) -> Guarded {
        Guarded { io, conn, timer: None }
    }

    /// `Err` once the deadline has passed; else arms the timer for it.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.conn.deadline() else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response not written within the write timeout",
            ));
        }
        match &mut self.timer {
            Some((at, sleep)) if *at == deadline => {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "response not written within the write timeout",
                    ));
                }
            }
            _ => {
                let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
                let _ = sleep.as_mut().poll(cx);
                self.timer = Some((deadline, sleep));
            }
        }
        Ok(())
    }

    fn after_write<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
        progress: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(Ok(v)) => {
                if progress(&v) {
                    self.conn.touch();
                }
                Poll::Ready(Ok(v))
            }
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.conn.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.after_write(r, cx, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.after_write(r, cx, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        let r = self.after_write(r, cx, |_| false);
        if let Poll::Ready(Ok(())) = r {
            self.conn.flushed();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_quietest_connection_is_closed() {
        let r = Registry::new(2, 4);
        let a = r.admit();
        tokio::time::advance(Duration::from_millis(10)).await;
        let b = r.admit();
        tokio::time::advance(Duration::from_millis(10)).await;
        a.conn.touch(); // a spoke last: b is now the quietest
        let c = r.admit();
        assert_eq!(r.len(), 2);
        // b was told to close; a and c were not.
        assert!(
            tokio::time::timeout(Duration::from_millis(1), b.conn.aborted())
                .await
                .is_ok()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(1), a.conn.aborted())
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(1), c.conn.aborted())
                .await
                .is_err()
        );
        drop(b);
        assert_eq!(
            r.len(),
            2,
            "a closed connection that was already evicted changes nothing"
        );
        drop(a);
        assert_eq!(r.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_scrape_cap_the_quietest_scrape_is_cut() {
        let r = Registry::new(10, 2);
        let conns: Vec<_> = (0..3).map(|_| r.admit()).collect();
        let body = vec![Bytes::from_static(b"x 1\n")];
        let _b0 = r.start_scrape(&conns[0].conn, body.clone());
        tokio::time::advance(Duration::from_millis(5)).await;
        conns[1].conn.touch();
        let _b1 = r.start_scrape(&conns[1].conn, body.clone());
        tokio::time::advance(Duration::from_millis(5)).await;
        conns[2].conn.touch();
        let b2 = r.start_scrape(&conns[2].conn, body.clone());
        assert!(
            tokio::time::timeout(Duration::from_millis(1), conns[0].conn.aborted())
                .await
                .is_ok()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(1), conns[1].conn.aborted())
                .await
                .is_err()
        );
        // A finished scrape (body taken, then flushed) no longer counts.
        drop(b2);
        conns[2].conn.flushed();
        assert!(!conns[2].conn.scraping.load(Ordering::Acquire));
        let _b3 = r.start_scrape(&conns[2].conn, body);
        assert!(
            tokio::time::timeout(Duration::from_millis(1), conns[1].conn.aborted())
                .await
                .is_err()
        );
    }

    #[test]
    fn the_cap_leaves_descriptors_for_the_pool() {
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!(cap(usize::MAX), (soft - FD_RESERVE) as usize);
        assert_eq!(cap(3), 3);
    }
}
