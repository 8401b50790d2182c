//! RFC 9421 HTTP message signatures with Ed25519, as Alpaca can sign its calls to us, over
//! `@method`, `@target-uri`, `content-type` and an RFC 9530 `content-digest` of the body.
//!
//! When the issuer is configured for signatures, an Alpaca request must carry a valid signature by
//! one of the configured keys *instead of* an API key (Alpaca's guide offers the two as
//! alternatives): the digest must match the body exactly, the signature must cover those four
//! components, `created` must be recent and `expires` (when given) not passed, so a captured
//! request cannot be replayed later or altered on the way. `@target-uri` is rebuilt from the
//! configured public URL, never from the request's Host header.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};
use std::fmt;

/// The components a signature of a request with a body must cover, in any order.
pub const REQUIRED_COMPONENTS: [&str; 4] =
    ["@method", "@target-uri", "content-type", "content-digest"];
/// What a signature of a request without a body (a GET) must cover.
pub const REQUIRED_WITHOUT_BODY: [&str; 2] = ["@method", "@target-uri"];

/// Who may sign and how fresh a signature must be.
#[derive(Clone)]
pub struct SignatureConfig {
    /// Public keys by `keyid`.
    pub keys: Vec<(String, VerifyingKey)>,
    /// Scheme, host and optional path prefix Alpaca addresses us by
    /// (`https://issuer.example.com`): the start of every `@target-uri`. Required: the Host
    /// header a request carries is the caller's choice, so it cannot be what a signature binds.
    pub public_base_url: String,
    /// Oldest (and furthest in the future) `created` accepted, in seconds.
    pub max_age_secs: u64,
}

impl fmt::Debug for SignatureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureConfig")
            .field(
                "keyids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("public_base_url", &self.public_base_url)
            .field("max_age_secs", &self.max_age_secs)
            .finish()
    }
}

impl SignatureConfig {
    /// The `@target-uri` of a request for `path` and `query` under the public URL.
    pub fn target_uri(&self, path: &str, query: Option<&str>) -> String {
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!(
            "{}{path}{query}",
            self.public_base_url.trim_end_matches('/')
        )
    }
}

/// Refuses a configuration that could not check a signature as Alpaca makes it: no key, or a
/// public URL that is not an absolute http(s) URL without query or fragment.
pub fn check_config(config: &SignatureConfig) -> Result<(), String> {
    if config.keys.is_empty() {
        return Err(
            "signatures need at least one Alpaca public key (ALPACA_SIGNATURE_KEYS)".into(),
        );
    }
    let url = &config.public_base_url;
    let parsed = tide::http::Url::parse(url)
        .map_err(|e| format!("ISSUER_PUBLIC_URL {url:?} is not an absolute URL: {e}"))?;
    let ok = matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some()
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "ISSUER_PUBLIC_URL {url:?} must be http(s)://host[:port][/prefix] without query or fragment"
        ))
    }
}

/// Why a request's signature is refused. Each answers 401 with its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Signature-Input`, `Signature` or `Content-Digest` header.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A header does not parse as RFC 9421 / RFC 9530 structured fields.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The signature does not cover every required component.
    #[error("signature does not cover {0}")]
    NotCovered(&'static str),
    /// `keyid` names no configured key, or `alg` is not ed25519.
    #[error("unknown key or algorithm")]
    UnknownKey,
    /// `created` is missing, too old or in the future, or `expires` has passed.
    #[error("signature is not fresh")]
    Stale,
    /// The body does not hash to the declared digest.
    #[error("content-digest does not match the body")]
    DigestMismatch,
    /// The signature does not verify over the signature base.
    #[error("signature does not verify")]
    BadSignature,
}

/// What the checker needs of a request.
pub struct Signed<'a> {
    pub method: &'a str,
    pub target_uri: &'a str,
    pub content_type: Option<&'a str>,
    pub content_digest: Option<&'a str>,
    pub signature_input: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// One parsed `Signature-Input` member: the covered components and the raw parameter text.
struct Input<'a> {
    label: &'a str,
    components: Vec<&'a str>,
    /// Everything after the label's `=`: the exact `@signature-params` value.
    raw: &'a str,
    keyid: Option<&'a str>,
    alg: Option<&'a str>,
    created: Option<u64>,
    expires: Option<u64>,
}

fn parse_input(header: &str) -> Result<Input<'_>, SignatureError> {
    let bad = SignatureError::Malformed("Signature-Input");
    // A dictionary of signatures: verify the first member (split at commas outside quotes and
    // parentheses, so `sig1=(...), sig2=(...)` is read right).
    let member = first_member(header).trim();
    let (label, raw) = member.split_once('=').ok_or(bad.clone())?;
    let raw = raw.trim();
    let list_end = raw.find(')').ok_or(bad.clone())?;
    let list = raw
        .strip_prefix('(')
        .ok_or(bad.clone())?
        .get(..list_end - 1)
        .ok_or(bad.clone())?;
    let components = list
        .split_whitespace()
        .map(|c| {
            c.strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .ok_or(bad.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut input = Input {
        label: label.trim(),
        components,
        raw,
        keyid: None,
        alg: None,
        created: None,
        expires: None,
    };
    for param in raw
        .get(list_end + 1..)
        .unwrap_or("")
        .split(';')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = param.split_once('=').ok_or(bad.clone())?;
        let text = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        match name.trim() {
            "keyid" => input.keyid = text,
            "alg" => input.alg = text,
            "created" => input.created = Some(value.parse().map_err(|_| bad.clone())?),
            "expires" => input.expires = Some(value.parse().map_err(|_| bad.clone())?),
            _ => {}
        }
    }
    Ok(input)
}

/// The first member of a structured-field dictionary.
fn first_member(header: &str) -> &str {
    let mut depth = 0u32;
    let mut quoted = false;
    for (i, c) in header.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => return &header[..i],
            _ => {}
        }
    }
    header
}

/// The RFC 9421 signature base for the covered components.
fn signature_base(input: &Input<'_>, req: &Signed<'_>) -> Result<String, SignatureError> {
    let mut lines = Vec::with_capacity(input.components.len() + 1);
    for component in &input.components {
        let value = match *component {
            "@method" => req.method.to_ascii_uppercase(),
            "@target-uri" => req.target_uri.to_owned(),
            "content-type" => req
                .content_type
                .ok_or(SignatureError::Missing("Content-Type"))?
                .trim()
                .to_owned(),
            "content-digest" => req
                .content_digest
                .ok_or(SignatureError::Missing("Content-Digest"))?
                .trim()
                .to_owned(),
            _ => return Err(SignatureError::Malformed("Signature-Input component")),
        };
        lines.push(format!("\"{component}\": {value}"));
    }
    lines.push(format!("\"@signature-params\": {}", input.raw));
    Ok(lines.join("\n"))
}

/// Checks `Content-Digest` (sha-256 or sha-512) against the body.
fn check_digest(header: &str, body: &[u8]) -> Result<(), SignatureError> {
    let mut checked = false;
    for member in header.split(',') {
        let (alg, value) = member
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("Content-Digest"))?;
        let encoded = value
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or(SignatureError::Malformed("Content-Digest"))?;
        let declared = B64
            .decode(encoded)
            .map_err(|_| SignatureError::Malformed("Content-Digest"))?;
        let actual = match alg {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        if declared != actual {
            return Err(SignatureError::DigestMismatch);
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err(SignatureError::Malformed(
            "Content-Digest: no sha-256 or sha-512",
        ))
    }
}

/// Verifies a request against the configuration at `now` (unix seconds).
pub fn verify(config: &SignatureConfig, req: &Signed<'_>, now: u64) -> Result<(), SignatureError> {
    let input_header = req
        .signature_input
        .ok_or(SignatureError::Missing("Signature-Input"))?;
    let signature_header = req.signature.ok_or(SignatureError::Missing("Signature"))?;
    let input = parse_input(input_header)?;
    let required: &[&str] = if req.body.is_empty() {
        &REQUIRED_WITHOUT_BODY
    } else {
        &REQUIRED_COMPONENTS
    };
    for &required in required {
        if !input.components.contains(&required) {
            return Err(SignatureError::NotCovered(required));
        }
    }
    if input.alg.is_some_and(|a| a != "ed25519") {
        return Err(SignatureError::UnknownKey);
    }
    let key = config
        .keys
        .iter()
        .find(|(id, _)| Some(id.as_str()) == input.keyid)
        .map(|(_, k)| k)
        .ok_or(SignatureError::UnknownKey)?;
    let created = input.created.ok_or(SignatureError::Stale)?;
    if now.abs_diff(created) > config.max_age_secs {
        return Err(SignatureError::Stale);
    }
    if input.expires.is_some_and(|expires| now > expires) {
        return Err(SignatureError::Stale);
    }
    if input.components.contains(&"content-digest") {
        let digest = req
            .content_digest
            .ok_or(SignatureError::Missing("Content-Digest"))?;
        check_digest(digest, req.body)?;
    }
    let prefix = format!("{}=:", input.label);
    let encoded = signature_header
        .split(',')
        .map(str::trim)
        .find_map(|m| m.strip_prefix(&prefix).and_then(|v| v.strip_suffix(':')))
        .ok_or(SignatureError::Malformed("Signature"))?;
    let bytes = B64
        .decode(encoded)
        .map_err(|_| SignatureError::Malformed("Signature"))?;
    let signature =
        Signature::from_slice(&bytes).map_err(|_| SignatureError::Malformed("Signature"))?;
    let base = signature_base(&input, req)?;
    key.verify(base.as_bytes(), &signature)
        .map_err(|_| SignatureError::BadSignature)
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE, AlgorithmIdentifier
/// 1.3.101.112, BIT STRING of 33 bytes; the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Parses a configured key: `keyid:KEY`, where KEY is the PEM Alpaca hands over
/// (`-----BEGIN PUBLIC KEY-----`, an Ed25519 SubjectPublicKeyInfo; its line breaks may be written
/// as `\n`), the same SPKI as bare base64, or the raw 32 key bytes in base64.
pub fn parse_key(text: &str) -> Result<(String, VerifyingKey), String> {
    let (id, encoded) = text
        .split_once(':')
        .ok_or_else(|| format!("expected keyid:public-key, got {text:?}"))?;
    let id = id.trim();
    if id.is_empty() {
        return Err("empty keyid".into());
    }
    let unescaped = encoded.replace("\\n", "\n");
    let body: String = if unescaped.contains("-----BEGIN") {
        let inner = unescaped
            .split("-----BEGIN PUBLIC KEY-----")
            .nth(1)
            .and_then(|rest| rest.split("-----END PUBLIC KEY-----").next())
            .ok_or_else(|| format!("key {id}: PEM must be a PUBLIC KEY block"))?;
        inner.chars().filter(|c| !c.is_whitespace()).collect()
    } else {
        encoded.chars().filter(|c| !c.is_whitespace()).collect()
    };
    let bytes = B64.decode(body).map_err(|e| format!("key {id}: {e}"))?;
    let raw: &[u8] = match bytes.len() {
        32 => &bytes,
        44 if bytes.starts_with(&ED25519_SPKI_PREFIX) => &bytes[ED25519_SPKI_PREFIX.len()..],
        44 => return Err(format!("key {id}: not an Ed25519 SubjectPublicKeyInfo")),
        n => {
            return Err(format!(
                "key {id}: {n} bytes is neither a raw Ed25519 key (32) nor its SPKI (44)"
            ))
        }
    };
    let array: [u8; 32] = raw
        .try_into()
        .map_err(|_| format!("key {id}: not 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&array).map_err(|e| format!("key {id}: {e}"))?;
    Ok((id.to_owned(), key))
}

/// The PEM (SPKI) form of an Ed25519 public key, as Alpaca hands its key over. For tests, docs
/// and the simulator.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(der)
    )
}

/// Signs a request the way Alpaca does: headers `Content-Digest`, `Signature-Input`, `Signature`.
/// For tests and the simulator.
pub fn sign(
    key: &ed25519_dalek::SigningKey,
    keyid: &str,
    method: &str,
    target_uri: &str,
    content_type: &str,
    body: &[u8],
    created: u64,
) -> [(String, String); 3] {
    use ed25519_dalek::Signer as _;
    let digest = format!("sha-256=:{}:", B64.encode(Sha256::digest(body)));
    let params = format!(
        "(\"@method\" \"@target-uri\" \"content-type\" \"content-digest\");created={created};keyid=\"{keyid}\";alg=\"ed25519\""
    );
    let base = format!(
        "\"@method\": {}\n\"@target-uri\": {target_uri}\n\"content-type\": {content_type}\n\"content-digest\": {digest}\n\"@signature-params\": {params}",
        method.to_ascii_uppercase()
    );
    let signature = key.sign(base.as_bytes());
    [
        ("Content-Digest".into(), digest),
        ("Signature-Input".into(), format!("sig1={params}")),
        (
            "Signature".into(),
            format!("sig1=:{}:", B64.encode(signature.to_bytes())),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
    }

    fn config() -> SignatureConfig {
        SignatureConfig {
            keys: vec![("alpaca-1".into(), key().verifying_key())],
            public_base_url: "https://issuer.example.com".into(),
            max_age_secs: 300,
        }
    }

    fn request<'a>(headers: &'a [(String, String); 3], body: &'a [u8]) -> Signed<'a> {
        Signed {
            method: "POST",
            target_uri: "https://issuer.example.com/inkind/issuance",
            content_type: Some("application/json"),
            content_digest: Some(&headers[0].1),
            signature_input: Some(&headers[1].1),
            signature: Some(&headers[2].1),
            body,
        }
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_fails() {
        let body = br#"{"qty":"1"}"#;
        let headers = sign(
            &key(),
            "alpaca-1",
            "post",
            "https://issuer.example.com/inkind/issuance",
            "application/json",
            body,
            1_000,
        );
        assert_eq!(verify(&config(), &request(&headers, body), 1_010), Ok(()));
        assert_eq!(
            verify(&config(), &request(&headers, br#"{"qty":"2"}"#), 1_010),
            Err(SignatureError::DigestMismatch)
        );
        let mut other_uri = request(&headers, body);
        other_uri.target_uri = "https://issuer.example.com/tokenization/mint";
        assert_eq!(
            verify(&config(), &other_uri, 1_010),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify(&config(), &request(&headers, body), 2_000),
            Err(SignatureError::Stale)
        );
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let forged = sign(
            &stranger,
            "alpaca-1",
            "POST",
            "https://issuer.example.com/inkind/issuance",
            "application/json",
            body,
            1_000,
        );
        assert_eq!(
            verify(&config(), &request(&forged, body), 1_010),
            Err(SignatureError::BadSignature)
        );
        let unknown = sign(
            &key(),
            "someone",
            "POST",
            "https://issuer.example.com/inkind/issuance",
            "application/json",
            body,
            1_000,
        );
        assert_eq!(
            verify(&config(), &request(&unknown, body), 1_010),
            Err(SignatureError::UnknownKey)
        );
    }

    #[test]
    fn a_signature_must_cover_every_component() {
        let body = b"{}";
        let mut headers = sign(
            &key(),
            "alpaca-1",
            "POST",
            "https://x/inkind/issuance",
            "application/json",
            body,
            1_000,
        );
        headers[1].1 = headers[1].1.replace(" \"content-digest\"", "");
        assert_eq!(
            verify(&config(), &request(&headers, body), 1_000),
            Err(SignatureError::NotCovered("content-digest"))
        );
        let mut missing = request(&headers, body);
        missing.signature = None;
        assert_eq!(
            verify(&config(), &missing, 1_000),
            Err(SignatureError::Missing("Signature"))
        );
    }

    #[test]
    fn the_first_of_several_signatures_is_the_one_checked() {
        let body = b"{}";
        let mut headers = sign(
            &key(),
            "alpaca-1",
            "POST",
            "https://x/a",
            "application/json",
            body,
            1_000,
        );
        headers[1]
            .1
            .push_str(", sig2=(\"@method\");created=1;keyid=\"other, with comma\"");
        headers[2].1.push_str(", sig2=:AAAA:");
        let mut req = request(&headers, body);
        req.target_uri = "https://x/a";
        assert_eq!(verify(&config(), &req, 1_000), Ok(()));
    }

    #[test]
    fn keys_parse_from_the_pem_alpaca_hands_over() {
        let pem = public_key_pem(&key().verifying_key());
        let (id, parsed) = parse_key(&format!("alpaca-1:{pem}")).unwrap();
        assert_eq!((id.as_str(), parsed), ("alpaca-1", key().verifying_key()));
        // In an environment variable the line breaks are often written as \n.
        let one_line = pem.replace('\n', "\\n");
        assert_eq!(
            parse_key(&format!("alpaca-1:{one_line}")).unwrap().1,
            key().verifying_key()
        );
        // A P-256 or RSA key in the PEM is refused, not misread.
        let mut other = ED25519_SPKI_PREFIX.to_vec();
        other[8] = 0x71;
        other.extend_from_slice(&[1u8; 32]);
        let wrong = format!(
            "k:-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
            B64.encode(other)
        );
        assert!(parse_key(&wrong).is_err());
    }

    #[test]
    fn an_expired_signature_is_refused() {
        use ed25519_dalek::Signer as _;
        let body = b"{}";
        let digest = format!("sha-256=:{}:", B64.encode(Sha256::digest(body)));
        let params = "(\"@method\" \"@target-uri\" \"content-type\" \"content-digest\");created=1000;expires=1005;keyid=\"alpaca-1\";alg=\"ed25519\"";
        let target = "https://issuer.example.com/inkind/issuance";
        let base = format!("\"@method\": POST\n\"@target-uri\": {target}\n\"content-type\": application/json\n\"content-digest\": {digest}\n\"@signature-params\": {params}");
        let signature = format!(
            "sig1=:{}:",
            B64.encode(key().sign(base.as_bytes()).to_bytes())
        );
        let input = format!("sig1={params}");
        let req = Signed {
            method: "POST",
            target_uri: target,
            content_type: Some("application/json"),
            content_digest: Some(&digest),
            signature_input: Some(&input),
            signature: Some(&signature),
            body,
        };
        assert_eq!(verify(&config(), &req, 1_004), Ok(()));
        assert_eq!(verify(&config(), &req, 1_006), Err(SignatureError::Stale));
    }

    #[test]
    fn the_public_url_is_required_and_checked() {
        let mut c = config();
        assert!(check_config(&c).is_ok());
        assert_eq!(
            c.target_uri("/tokenization/mint", Some("a=1")),
            "https://issuer.example.com/tokenization/mint?a=1"
        );
        c.public_base_url = String::new();
        assert!(check_config(&c).is_err());
        c.public_base_url = "issuer.example.com".into();
        assert!(check_config(&c).is_err());
        c.public_base_url = "https://issuer.example.com/?x=1".into();
        assert!(check_config(&c).is_err());
        c.public_base_url = "https://issuer.example.com/prefix/".into();
        assert_eq!(
            c.target_uri("/tokenization/mint", None),
            "https://issuer.example.com/prefix/tokenization/mint"
        );
    }

    #[test]
    fn keys_parse_from_keyid_and_base64() {
        let encoded = B64.encode(key().verifying_key().to_bytes());
        assert_eq!(
            parse_key(&format!("alpaca-1:{encoded}")).unwrap().0,
            "alpaca-1"
        );
        assert!(parse_key("alpaca-1:notbase64!").is_err());
        assert!(parse_key("nokeyid").is_err());
    }
}
