//! TLS for the lean row reader (`mysql::wire`), verifying exactly as the
//! driver's connections do for the same settings (`database.tls`): the
//! server's certificate chained to `ca_file` (else the built-in roots) and
//! issued for the host (`verify-identity`), chained only (`verify-ca`), or
//! not checked (`required`, `preferred`); the client's certificate sent
//! when one is set. A connection this cannot set up goes to the driver,
//! which names the problem.

use crate::config::{CertificateCheck, Endpoint, TlsConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("TLS for the row reader: {0}")]
pub struct TlsSetupError(String);

/// The connector and the name the server's certificate is checked against,
/// for an endpoint that connects over TLS (`Endpoint::connects_plain` false).
pub(crate) fn connector(
    endpoint: &Endpoint,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), TlsSetupError> {
    let name = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| TlsSetupError(format!("host {:?}: {e}", endpoint.host)))?;
    let config = client_config(&endpoint.tls)?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

fn client_config(tls: &TlsConfig) -> Result<ClientConfig, TlsSetupError> {
    let check = tls.mode.certificate_check();
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(in_file(path))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsSetupError(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { check, webpki }));
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let bytes = std::fs::read(key).map_err(in_file(key))?;
            let key_der = PrivateKeyDer::from_pem_slice(&bytes).map_err(in_file(key))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsSetupError(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// An error about the file at `path`, naming it.
fn in_file<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> TlsSetupError + '_ {
    move |e| TlsSetupError(format!("{}: {e}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(in_file(path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(in_file(path))?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

#[derive(Debug)]
struct Verifier {
    check: CertificateCheck,
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == CertificateCheck::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == CertificateCheck::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    // The handshake's signatures are checked in every mode: the peer holds
    // the key of the certificate it showed.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
