//! A TCP link to Postgres that a test can cut like a network: while cut, no
//! byte passes either way and no socket is closed, so both peers hear
//! nothing, as behind a dropped route. `sever` then closes the server-side
//! sockets, standing in for the server's TCP stack giving up on a silent
//! peer (the tests have no root-free way to make the kernel's keepalives go
//! unanswered). `restore` lets traffic through again.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Open,
    Cut,
    /// Cut, and the server-side sockets of the connections of the moment closed.
    Severed,
}

pub struct Link {
    pub port: u16,
    state: Arc<watch::Sender<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Listens on 127.0.0.1 and forwards every connection to `server`.
    pub async fn new(server: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(watch::channel(State::Open).0);
        let tx = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, server, tx.subscribe()));
            }
        });
        Link { port, state, accept }
    }

    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
    }

    pub fn sever(&self) {
        self.state.send_replace(State::Severed);
    }

    pub fn restore(&self) {
        self.state.send_replace(State::Open);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One connection. Waits while the link is down, connects, then copies
/// both ways while it is open.
async fn forward(mut client: TcpStream, server: SocketAddr, mut state: watch::Receiver<State>) {
    while *state.borrow_and_update() != State::Open {
        if state.changed().await.is_err() {
            return;
        }
    }
    let Ok(mut upstream) = TcpStream::connect(server).await else {
        return;
    };
    let (mut a, mut b) = ([0u8; 8192], [0u8; 8192]);
    loop {
        let now = *state.borrow_and_update();
        match now {
            State::Open => {}
            State::Cut => {
                if state.changed().await.is_err() {
                    return;
                }
                continue;
            }
            State::Severed => {
                // The server hears the end of this connection; the client hears nothing, ever.
                drop(upstream);
                let _keep_silent = client;
                std::future::pending::<()>().await;
                return;
            }
        }
        tokio::select! {
            n = client.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if upstream.write_all(&a[..n]).await.is_err() { return },
            },
            n = upstream.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&b[..n]).await.is_err() { return },
            },
            _ = state.changed() => {}
        }
    }
}
