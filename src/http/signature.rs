//! RFC 9421 HTTP message signatures with Ed25519, as Alpaca can sign its calls to us, over
//! `@method`, `@target-uri`, `content-type` and an RFC 9530 `content-digest` of the body.
//!
//! When keys are configured, an Alpaca request must carry a valid signature by one of them (in
//! addition to the API key): the digest must match the body exactly, the signature must cover
//! those four components, and `created` must be recent, so a captured request cannot be replayed
//! later or altered on the way.

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
    /// Scheme and host Alpaca addresses us by (`https://issuer.example.com`) when a proxy in front
    /// changes what this server sees; `None`: the URL as received.
    pub public_base_url: Option<String>,
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
    /// `created` is missing, too old or in the future.
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

/// Parses a configured key: `keyid:base64-of-32-bytes`.
pub fn parse_key(text: &str) -> Result<(String, VerifyingKey), String> {
    let (id, encoded) = text
        .split_once(':')
        .ok_or_else(|| format!("expected keyid:base64, got {text:?}"))?;
    let bytes = B64
        .decode(encoded.trim())
        .map_err(|e| format!("key {id}: {e}"))?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("key {id}: not 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&array).map_err(|e| format!("key {id}: {e}"))?;
    Ok((id.trim().to_owned(), key))
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
            public_base_url: None,
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
