//! TCP tunnels: a local port on 127.0.0.1 forwarded through the SSH connection to host:port
//! as the server sees it (the k3s API on 127.0.0.1:6443, Vault's service address).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use super::Remote;

/// A listening local end; dropping it stops accepting new connections.
pub struct Tunnel {
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Remote {
    /// Forwards a fresh local port to `host:port` on the server's side.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<Tunnel> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a local port for the tunnel")?;
        let local_addr = listener.local_addr()?;
        let handle = Arc::clone(&self.handle);
        let host = host.to_string();
        let host_for_log = host.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, peer)) = listener.accept().await else {
                    break;
                };
                let handle = Arc::clone(&handle);
                let host = host.clone();
                tokio::spawn(async move {
                    let channel = match handle
                        .channel_open_direct_tcpip(
                            host.clone(),
                            port as u32,
                            peer.ip().to_string(),
                            peer.port() as u32,
                        )
                        .await
                    {
                        Ok(c) => c,
                        Err(e) => {
                            // The client sees a closed connection; callers retrying a wait make this frequent.
                            tracing::debug!("tunnel to {host}:{port} refused by the server: {e}");
                            return;
                        }
                    };
                    let mut stream = channel.into_stream();
                    if let Err(e) = tokio::io::copy_bidirectional(&mut socket, &mut stream).await {
                        tracing::debug!("tunnel connection to {host}:{port} ended: {e}");
                    }
                });
            }
        });
        tracing::debug!(
            "tunnel {local_addr} -> {host_for_log}:{port} via {}",
            self.target.addr()
        );
        Ok(Tunnel { local_addr, task })
    }
}
