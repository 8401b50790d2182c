//! Signed reports: EIP-191 (`personal_sign`) over the canonical JSON, so anyone holding only the
//! issuer's address can check that a report is the issuer's and unaltered.

use super::render::{canonical_bytes, canonical_value};
use super::ReportError;
use crate::chain::BotSigner;
use alloy::primitives::{Address, Signature};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A report with the issuer's signature over its canonical JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The report document; its compact JSON with sorted keys is what was signed.
    pub report: Value,
    /// 65 bytes (r, s, v), 0x-prefixed hex.
    pub signature: String,
    /// The address the signer claims; [`verify`] trusts only the recovered one.
    pub signer: Address,
}

/// Signs with the bot's key, whichever backend holds it (a remote one signs the EIP-191 hash).
pub async fn sign(
    report: &(impl serde::Serialize + Sync),
    signer: &BotSigner,
) -> Result<SignedReport, ReportError> {
    let value = canonical_value(report)?;
    let bytes = canonical_bytes(&value)?;
    let signature = signer
        .sign_message(&bytes)
        .await
        .map_err(|e| ReportError::Sign(e.to_string()))?;
    Ok(SignedReport {
        report: value,
        signature: format!("0x{}", hex::encode(signature.as_bytes())),
        signer: signer.address(),
    })
}

/// Checks a signed report file's text against `expected`; returns the recovered signer.
pub fn verify(text: &str, expected: Address) -> Result<Address, ReportError> {
    let signed: SignedReport = serde_json::from_str(text).map_err(|e| {
        ReportError::Json(format!(
            "not a signed report ({{report, signature, signer}}): {e}"
        ))
    })?;
    let raw = signed
        .signature
        .strip_prefix("0x")
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| ReportError::BadSignature("signature is not 0x-prefixed hex".to_owned()))?;
    let signature = Signature::from_raw(&raw)
        .map_err(|e| ReportError::BadSignature(format!("signature does not parse: {e}")))?;
    let bytes = canonical_bytes(&signed.report)?;
    let recovered = signature
        .recover_address_from_msg(&bytes)
        .map_err(|e| ReportError::BadSignature(format!("no signer recovers: {e}")))?;
    if recovered != expected {
        return Err(ReportError::BadSignature(format!(
            "the report was not signed by {expected:#x} or was altered after signing (recovers to {recovered:#x})"
        )));
    }
    if signed.signer != recovered {
        return Err(ReportError::BadSignature(format!(
            "the file names signer {:#x} but the signature recovers to {recovered:#x}",
            signed.signer
        )));
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ANVIL_DEV_KEY;

    #[tokio::test]
    async fn tampering_and_wrong_signers_are_caught() {
        let input: reconciler::audit::AuditInput =
            serde_json::from_str(include_str!("../../fixtures/audit/clean_book.json")).unwrap();
        let report = reconciler::audit::audit(&input).unwrap();
        let signer: BotSigner = crate::chain::EthersSigner::from_private_key(ANVIL_DEV_KEY)
            .unwrap()
            .into();
        let envelope = sign(&report, &signer).await.unwrap();
        let text = serde_json::to_string_pretty(&envelope).unwrap();
        assert_eq!(verify(&text, signer.address()).unwrap(), signer.address());

        let other: Address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse()
            .unwrap();
        assert!(matches!(
            verify(&text, other),
            Err(ReportError::BadSignature(_))
        ));

        let tampered = text.replacen("\"total_supply\": \"3\"", "\"total_supply\": \"4\"", 1);
        assert_ne!(tampered, text);
        assert!(matches!(
            verify(&tampered, signer.address()),
            Err(ReportError::BadSignature(_))
        ));
    }
}
