//! The serving certificate, chosen per TLS handshake from a pair of PEM files that is
//! re-read when it changes on disk. Kubernetes updates a Secret volume by swapping a
//! symlink, so the files are polled rather than watched; a pair that does not load (half
//! written, key and certificate not matching) keeps the previous one in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM certificate chain: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path} is not a PEM private key: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("the key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path} cannot be used for TLS: {message}")]
    Unusable { path: PathBuf, message: String },
}

/// The file pair and the certificate last loaded from it.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
    /// Told the serving certificate's notAfter at every load (the expiry metric).
    expiry: std::sync::OnceLock<crate::metrics::Metrics>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, in seconds since the epoch (None if unreadable).
    not_after: Option<i64>,
    /// The bytes it was loaded from, to notice a change.
    files: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ReloadingCert {
    /// Loads the pair once; an error here is fatal at start-up.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = crypto_provider();
        let files = read_pair(cert_path, key_path)?;
        let key = certified_key(cert_path, key_path, &files, &provider)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Loaded {
                not_after: not_after(&key),
                key,
                files,
            }),
            expiry: std::sync::OnceLock::new(),
        }))
    }

    /// The serving certificate's notAfter (seconds since the epoch), now and after every
    /// reload, as `pvc_clone_guard_certificate_expiry_timestamp_seconds`.
    pub fn report_expiry_to(&self, metrics: &crate::metrics::Metrics) {
        let metrics = self.expiry.get_or_init(|| metrics.clone());
        if let Some(at) = self.not_after() {
            metrics.set_certificate_expiry(at);
        }
    }

    /// The notAfter of the certificate being served, in seconds since the epoch.
    pub fn not_after(&self) -> Option<i64> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after
    }

    /// Re-reads the files; returns whether a new certificate is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = read_pair(&self.cert_path, &self.key_path)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).files == files {
            return Ok(false);
        }
        let key = certified_key(&self.cert_path, &self.key_path, &files, &self.provider)?;
        let not_after = not_after(&key);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            key,
            not_after,
            files,
        };
        if let (Some(metrics), Some(at)) = (self.expiry.get(), not_after) {
            metrics.set_certificate_expiry(at);
        }
        Ok(true)
    }

    /// Polls the files until the process ends.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match this.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %this.cert_path.display(), "serving a new certificate")
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "certificate files changed but do not load; still serving the previous certificate")
                    }
                }
            }
        });
    }

    /// A TLS 1.2+ server configuration that serves the current certificate, offering HTTP/2
    /// and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()).key,
        ))
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    (cert_pem, key_pem): &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            },
            other => TlsError::Unusable {
                path: key_path.to_owned(),
                message: other.to_string(),
            },
        })
}

/// The leaf certificate's notAfter, in seconds since the epoch.
fn not_after(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(cert.validity().not_after.timestamp())
}
