//! `pvc-clone-guard certs`: a CA and a serving certificate for the webhook, made with rcgen.
//!
//! Run again to rotate: an existing CA in the directory is kept and only the serving
//! certificate is issued anew, so the caBundle registered with the API server stays valid.
//!
//! It never replaces or half-uses a CA: everything is checked before anything is written
//! (a `ca.crt` without its `ca.key` or the reverse, a key that does not match, a file that
//! cannot be read or parsed, a CA that has expired, `--days` outside 1 to the CA's remaining
//! life, a DNS name that is not one), and any of these is an error naming the file or the
//! flag, with nothing written.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::OffsetDateTime;

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
    /// `ca.crt`: the CA that signed the serving certificate (created or kept).
    pub ca_cert: PathBuf,
    pub ca_not_after: OffsetDateTime,
    /// `tls.crt`.
    pub cert: PathBuf,
    pub not_after: OffsetDateTime,
    pub files: Vec<PathBuf>,
}

/// The CA found in the directory, checked, or `None` when there is none yet.
struct ExistingCa {
    pem: String,
    key: KeyPair,
    not_after: OffsetDateTime,
}

pub fn generate(request: &CertsRequest) -> Result<CertsOutcome> {
    let dir = &request.out_dir;
    if request.days < 1 {
        bail!("--days must be at least 1, not {}", request.days);
    }
    if request.ca_days < 1 {
        bail!("--ca-days must be at least 1, not {}", request.ca_days);
    }
    if request.dns_names.is_empty() && request.ip_addresses.is_empty() {
        bail!("give the serving certificate at least one --dns name or --ip address");
    }
    for name in &request.dns_names {
        if !is_dns_name(name) {
            bail!(
                "--dns {name:?} is not a valid DNS name (labels of letters, digits and '-', \
                 1-63 characters each, separated by dots; a leading \"*.\" is allowed)"
            );
        }
    }
    if dir.exists() && !dir.is_dir() {
        bail!("--out-dir {} is not a directory", dir.display());
    }
    let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let now = OffsetDateTime::now_utc();
    let existing = existing_ca(&ca_cert_path, &ca_key_path, now)?;
    // Days past the year 9999 cannot be written in a certificate (nor added to a date).
    let days_from_now = |flag: &str, days: u32| {
        now.checked_add(time::Duration::days(i64::from(days)))
            .filter(|date| date.year() <= 9999)
            .with_context(|| format!("{flag} {days} reaches past the year 9999: lower {flag}"))
    };
    let ca_not_after = match existing.as_ref() {
        Some(ca) => ca.not_after,
        None => days_from_now("--ca-days", request.ca_days)?,
    };
    let not_after = days_from_now("--days", request.days)?;
    if not_after > ca_not_after {
        let left = (ca_not_after - now).whole_days();
        match existing {
            Some(_) => bail!(
                "--days {} is longer than the CA in {} has left (it expires on {}, in {left} days): \
                 lower --days, or rotate the CA first (certs/README.md)",
                request.days,
                ca_cert_path.display(),
                ca_not_after.date()
            ),
            None => bail!(
                "--days {} is longer than the new CA's --ca-days {}",
                request.days,
                request.ca_days
            ),
        }
    }

    // Everything is checked: from here on, only writing.
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let created_ca = existing.is_none();
    let (ca_pem, issuer) = match existing {
        Some(ca) => {
            let issuer = Issuer::from_ca_cert_pem(&ca.pem, ca.key).with_context(|| {
                format!("{} is not a usable CA certificate", ca_cert_path.display())
            })?;
            (ca.pem, issuer)
        }
        None => {
            let key = KeyPair::generate().context("cannot generate the CA key")?;
            let mut params = CertificateParams::default();
            // A name of its own (its creation time), and the key identifiers below: during
            // a CA rotation the caBundle holds two CAs, and a client that looks an issuer up
            // by name (OpenSSL) must not find the other one.
            params.distinguished_name = name(&format!(
                "pvc-clone-guard CA {}T{:02}:{:02}:{:02}Z",
                now.date(),
                now.hour(),
                now.minute(),
                now.second()
            ));
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            set_validity(&mut params, now, ca_not_after);
            let cert = params
                .self_signed(&key)
                .context("cannot sign the CA certificate")?;
            write(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
            write(&ca_cert_path, cert.pem().as_bytes(), false)?;
            (cert.pem(), Issuer::new(params, key))
        }
    };

    let mut params =
        CertificateParams::new(request.dns_names.clone()).context("cannot use the --dns names")?;
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
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, not_after);
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

    let mut files = vec![tls_cert_path.clone(), tls_key_path, patch_path];
    if created_ca {
        files.splice(0..0, [ca_cert_path.clone(), ca_key_path]);
    }
    Ok(CertsOutcome {
        created_ca,
        ca_cert: ca_cert_path,
        ca_not_after,
        cert: tls_cert_path,
        not_after,
        files,
    })
}

/// The CA pair in the directory, checked: both files or neither, readable, a CA
/// certificate that has not expired, and the key that belongs to it.
fn existing_ca(
    cert_path: &Path,
    key_path: &Path,
    now: OffsetDateTime,
) -> Result<Option<ExistingCa>> {
    match (cert_path.exists(), key_path.exists()) {
        (false, false) => return Ok(None),
        (true, false) => bail!(
            "{} exists but its key {} does not: restore the key, or move both away to create a new CA \
             (a new CA must be registered in caBundle again)",
            cert_path.display(),
            key_path.display()
        ),
        (false, true) => bail!(
            "{} exists but its certificate {} does not: restore the certificate, or move both away to \
             create a new CA (a new CA must be registered in caBundle again)",
            key_path.display(),
            cert_path.display()
        ),
        (true, true) => {}
    }
    let pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| anyhow::anyhow!("{} holds no PEM certificate", cert_path.display()))?;
    let cert = parsed
        .parse_x509()
        .map_err(|_| anyhow::anyhow!("{} is not a valid X.509 certificate", cert_path.display()))?;
    if !cert.is_ca() {
        bail!("{} is not a CA certificate", cert_path.display());
    }
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|_| anyhow::anyhow!("{} is not a PEM private key", key_path.display()))?;
    if key.subject_public_key_info() != cert.public_key().raw {
        bail!(
            "{} is not the key of {}: put the matching pair back, or move both away to create a new CA",
            key_path.display(),
            cert_path.display()
        );
    }
    let not_after = cert.validity().not_after.to_datetime();
    if not_after <= now {
        bail!(
            "the CA in {} expired on {}: move ca.crt and ca.key away to create a new one, and \
             register it (certs/README.md, rotating the CA)",
            cert_path.display(),
            not_after.date()
        );
    }
    Ok(Some(ExistingCa {
        pem,
        key,
        not_after,
    }))
}

/// A DNS name as a certificate's subjectAltName holds it: dot-separated labels of ASCII
/// letters, digits and hyphens (not at either end), 1 to 63 characters each, at most 253 in
/// all; the first label may be the wildcard `*`.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name == "*" || name.len() > 253 {
        return false;
    }
    name.split('.').enumerate().all(|(index, label)| {
        (index == 0 && label == "*")
            || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    })
}

/// What to run after `certs`: apply the overlay the directory belongs to (the layout of
/// `manifests/overlays/*/certs`), or else what the files are for.
pub fn next_step(out_dir: &Path) -> String {
    match out_dir.parent() {
        Some(overlay) if overlay.join("kustomization.yaml").is_file() => {
            let shown = if overlay.as_os_str().is_empty() {
                Path::new(".")
            } else {
                overlay
            };
            format!("kubectl apply -k {}", shown.display())
        }
        _ => "put tls.crt and tls.key into Secret pvc-clone-guard-tls, and apply \
              cabundle-patch.yaml to the ValidatingWebhookConfiguration (it sets caBundle)"
            .to_owned(),
    }
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

fn set_validity(params: &mut CertificateParams, now: OffsetDateTime, not_after: OffsetDateTime) {
    // Backdated a little: the clocks of the API server and of this machine may differ.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = not_after;
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

    #[test]
    fn dns_names_are_checked() {
        for good in [
            "localhost",
            "pvc-clone-guard.pvc-clone-guard.svc",
            "pvc-clone-guard.pvc-clone-guard.svc.cluster.local.",
            "*.example.com",
            "a1-b2.c",
        ] {
            assert!(super::is_dns_name(good), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a"; 127].join(".") + ".bb";
        for bad in [
            "",
            "bad name!",
            "-start.example",
            "end-.example",
            "a..b",
            "a.*.b",
            "*",
            "ünïcode.example",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!super::is_dns_name(bad), "{bad}");
        }
    }
}
