//! `pvc-clone-guard certs`: a CA and a serving certificate for the webhook, made with rcgen.
//!
//! Run again to rotate: an existing CA in the directory is kept and only the serving
//! certificate is issued anew, so the caBundle registered with the API server stays valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The Service DNS names of the manifests in `manifests/`.
pub const DEFAULT_DNS_NAMES: [&str; 2] = [
    "pvc-clone-guard.pvc-clone-guard.svc",
    "pvc-clone-guard.pvc-clone-guard.svc.cluster.local",
];

pub struct CertsRequest {
    pub out_dir: PathBuf,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub days: u32,
    pub ca_days: u32,
}

/// What was written, for the summary printed to the user.
#[derive(Debug)]
pub struct CertsOutcome {
    pub created_ca: bool,
    pub files: Vec<PathBuf>,
}

pub fn generate(request: &CertsRequest) -> Result<CertsOutcome> {
    let dir = &request.out_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));

    let created_ca = !(ca_cert_path.exists() && ca_key_path.exists());
    let (ca_pem, issuer) = if created_ca {
        let key = KeyPair::generate().context("cannot generate the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("pvc-clone-guard CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, request.ca_days);
        let cert = params
            .self_signed(&key)
            .context("cannot sign the CA certificate")?;
        write(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
        write(&ca_cert_path, cert.pem().as_bytes(), false)?;
        (cert.pem(), Issuer::new(params, key))
    } else {
        let ca_pem = read(&ca_cert_path)?;
        let key = KeyPair::from_pem(&read(&ca_key_path)?)
            .with_context(|| format!("{} is not a usable private key", ca_key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).with_context(|| {
            format!("{} is not a usable CA certificate", ca_cert_path.display())
        })?;
        (ca_pem, issuer)
    };

    let mut params =
        CertificateParams::new(request.dns_names.clone()).context("invalid DNS name")?;
    params.subject_alt_names.extend(
        request
            .ip_addresses
            .iter()
            .map(|ip| SanType::IpAddress(*ip)),
    );
    params.distinguished_name = name(
        request
            .dns_names
            .first()
            .map_or("pvc-clone-guard", String::as_str),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, request.days);
    let key = KeyPair::generate().context("cannot generate the serving key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the serving certificate")?;

    // Key first: until the certificate is replaced too, the pair does not match and a
    // running webhook keeps serving the previous one.
    let (tls_cert_path, tls_key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    write(&tls_key_path, key.serialize_pem().as_bytes(), true)?;
    write(&tls_cert_path, cert.pem().as_bytes(), false)?;

    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let patch_path = dir.join("cabundle-patch.yaml");
    write(&patch_path, ca_bundle_patch(&bundle).as_bytes(), false)?;

    let mut files = vec![tls_cert_path, tls_key_path, patch_path];
    if created_ca {
        files.splice(0..0, [ca_cert_path, ca_key_path]);
    }
    Ok(CertsOutcome { created_ca, files })
}

/// How many webhooks `manifests/base/validatingwebhookconfiguration.yaml` declares (claims,
/// StatefulSets): each needs the CA, or the API server cannot call it.
pub const WEBHOOKS: usize = 2;

/// The JSON patch that puts the base64 CA `bundle` into every webhook's `caBundle`.
pub fn ca_bundle_patch(bundle: &str) -> String {
    (0..WEBHOOKS)
        .map(|index| {
            format!(
                "- op: add\n  path: /webhooks/{index}/clientConfig/caBundle\n  value: {bundle}\n"
            )
        })
        .collect()
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // Backdated a little: the clocks of the API server and of this machine may differ.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ca_bundle_patch_covers_every_shipped_webhook() {
        let manifest: serde_yaml_ng::Value = serde_yaml_ng::from_str(include_str!(
            "../manifests/base/validatingwebhookconfiguration.yaml"
        ))
        .expect("the shipped webhook configuration parses");
        let webhooks = manifest["webhooks"].as_sequence().expect("webhooks");
        assert_eq!(webhooks.len(), super::WEBHOOKS);
        let patch = super::ca_bundle_patch("Q0E=");
        for index in 0..webhooks.len() {
            assert!(
                patch.contains(&format!(
                    "path: /webhooks/{index}/clientConfig/caBundle\n  value: Q0E=\n"
                )),
                "{patch}"
            );
        }
    }
}
