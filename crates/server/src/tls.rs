//! HTTPS for the ready server, behind the `tls` cargo feature (on by default): rustls with
//! the ring provider, given to this server only (no process-wide provider is installed).
//!
//! Without the feature the server still takes [`TlsFiles`] in its configuration but refuses
//! to start with them, saying how to get HTTPS.

use std::io;

use tokio::net::TcpStream;

use crate::config::TlsFiles;
use crate::error::ServerError;

#[cfg(feature = "tls")]
pub(crate) use enabled::Tls;

#[cfg(not(feature = "tls"))]
pub(crate) use disabled::Tls;

#[cfg(feature = "tls")]
mod enabled {
    use std::path::Path;
    use std::sync::Arc;

    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::server::TlsStream;

    use super::{ServerError, TcpStream, TlsFiles, io};

    /// A loaded certificate and key, ready to accept connections.
    #[derive(Clone)]
    pub(crate) struct Tls(TlsAcceptor);

    impl Tls {
        /// Loads the PEM certificate chain and key.
        pub(crate) fn load(files: &TlsFiles) -> Result<Tls, ServerError> {
            let certs = load_certs(&files.cert)?;
            let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| ServerError::Tls {
                what: "key",
                path: files.key.clone(),
                message: err.to_string(),
            })?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
                .map_err(|err| ServerError::Tls {
                    what: "certificate",
                    path: files.cert.clone(),
                    message: err.to_string(),
                })?;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Tls(TlsAcceptor::from(Arc::new(tls))))
        }

        /// Performs the server side of the handshake.
        pub(crate) async fn accept(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
            self.0.accept(stream).await
        }
    }

    fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
        let failed = |message: String| ServerError::Tls {
            what: "certificate",
            path: path.to_owned(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|err| failed(err.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| failed(err.to_string()))?;
        if certs.is_empty() {
            return Err(failed("no PEM certificate in the file".to_owned()));
        }
        Ok(certs)
    }
}

#[cfg(not(feature = "tls"))]
mod disabled {
    use super::{ServerError, TcpStream, TlsFiles, io};

    /// HTTPS is not built in: no value of this type exists.
    #[derive(Clone)]
    pub(crate) enum Tls {}

    impl Tls {
        /// Refuses: this build has no TLS.
        pub(crate) fn load(files: &TlsFiles) -> Result<Tls, ServerError> {
            Err(ServerError::Tls {
                what: "certificate",
                path: files.cert.clone(),
                message: "this build of the server has no TLS; build it with the `tls` \
                          feature, or serve plain HTTP behind a proxy that terminates HTTPS"
                    .to_owned(),
            })
        }

        /// Never called: there is no value to call it on.
        pub(crate) async fn accept(&self, _stream: TcpStream) -> io::Result<TcpStream> {
            match *self {}
        }
    }
}
