//! The access listener: publishes the API and the pages to agent desktops outside the core's
//! private network, over TLS (rustls, certificate and key from the configuration). Plain HTTP
//! is allowed only on a loopback address (for a reverse proxy on the same host, or tests).
//!
//! TLS handshakes run in their own tasks (bounded in time), so a slow or silent client never
//! holds up the accept loop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

use super::config::AccessConfig;

/// Why the access listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A certificate or key file could not be read or parsed.
    #[error("access TLS: cannot load {path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("access TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr} (control.access.listen): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// No `listen` address is configured.
    #[error("control.access.listen is not set")]
    NotConfigured,
    /// Plain HTTP on a non-loopback address.
    #[error("control.access.listen {0} is not loopback: TLS (tls_cert, tls_key) is required")]
    NeedsTls(SocketAddr),
}

/// Loads a rustls server configuration from PEM files (ring provider, TLS 1.2 and 1.3,
/// ALPN http/1.1).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, AccessError> {
    let pem_err = |path: &Path, e: &dyn std::fmt::Display| AccessError::Pem {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, &e))?;
    if certs.is_empty() {
        return Err(pem_err(cert, &"no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AccessError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| AccessError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A listener yielding TLS streams whose handshake has completed.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Wraps a bound TCP listener.
    pub fn new(tcp: TcpListener, tls: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(tls);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("access listener accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let conn_tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = conn_tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener {
            rx,
            local,
            accept_task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended (only when the listener is dropped): never yield again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The bound access listener.
#[derive(Debug)]
pub enum AccessListener {
    /// Plain HTTP (loopback only).
    Plain(TcpListener),
    /// TLS.
    Tls(TlsListener),
}

impl AccessListener {
    /// Binds as configured.
    pub async fn bind(cfg: &AccessConfig) -> Result<Self, AccessError> {
        let addr = cfg.listen.ok_or(AccessError::NotConfigured)?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(tls_config(c, k)?),
            _ => None,
        };
        if tls.is_none() && !addr.ip().is_loopback() {
            return Err(AccessError::NeedsTls(addr));
        }
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| AccessError::Bind { addr, source })?;
        Ok(match tls {
            Some(t) => AccessListener::Tls(
                TlsListener::new(tcp, t).map_err(|source| AccessError::Bind { addr, source })?,
            ),
            None => AccessListener::Plain(tcp),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            AccessListener::Plain(t) => t.local_addr(),
            AccessListener::Tls(t) => Ok(t.local),
        }
    }

    /// True if TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, AccessListener::Tls(_))
    }

    /// Serves `app` until `shutdown` resolves.
    pub async fn serve(
        self,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self {
            AccessListener::Plain(t) => axum::serve(t, app).with_graceful_shutdown(shutdown).await,
            AccessListener::Tls(t) => axum::serve(t, app).with_graceful_shutdown(shutdown).await,
        }
    }
}
