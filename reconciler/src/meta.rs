//! `receiptInformation`: the tag every deposit and burn carries so the chain itself says whether an
//! action already happened. Rain meta v1, as the peer issuer writes it in production: the 8-byte
//! magic, then one CBOR map `{0: deflate(JSON), 1: content magic, 2: "application/json", 3: "deflate"}`.

use ciborium::value::{Integer, Value};
use flate2::{read::DeflateDecoder, read::ZlibDecoder, write::ZlibEncoder, Compression};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Prefix of every Rain meta v1 document.
pub const RAIN_META_V1_PREFIX: [u8; 8] = [0xff, 0x0a, 0x89, 0xc6, 0x74, 0xee, 0x78, 0x74];
/// Magic number of the JSON payload item (map key 1).
pub const JSON_ITEM_MAGIC: u64 = 0xffc4_7a62_99e8_a911;
/// Refuse to inflate a payload past this: receipt information is a few hundred bytes.
const MAX_INFLATED_BYTES: u64 = 64 * 1024;

/// The JSON carried in the receipt information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptInfo {
    pub tokenization_request_id: String,
    pub issuer_request_id: String,
    pub underlying: String,
    /// Decimal string, exactly as the quantity was accepted.
    pub quantity: String,
    /// Unix seconds when the action was planned.
    pub timestamp: u64,
    #[serde(default)]
    pub notes: String,
}

/// Why bytes found on chain are not our receipt information.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("missing the Rain meta v1 prefix")]
    Prefix,
    #[error("not CBOR: {0}")]
    Cbor(String),
    #[error("CBOR is not a meta map with a JSON item")]
    Shape,
    #[error("payload does not inflate: {0}")]
    Inflate(std::io::Error),
    #[error("payload is not the receipt JSON: {0}")]
    Json(serde_json::Error),
}

/// Encodes receipt information for a deposit or a burn.
pub fn encode(info: &ReceiptInfo) -> Vec<u8> {
    // Writing to memory cannot fail; serde_json of a plain struct cannot fail.
    let json = serde_json::to_vec(info).unwrap_or_default();
    let mut deflater = ZlibEncoder::new(Vec::new(), Compression::default());
    let _ = deflater.write_all(&json);
    let compressed = deflater.finish().unwrap_or_default();
    let map = Value::Map(vec![
        (Value::Integer(0.into()), Value::Bytes(compressed)),
        (
            Value::Integer(1.into()),
            Value::Integer(Integer::from(JSON_ITEM_MAGIC)),
        ),
        (
            Value::Integer(2.into()),
            Value::Text("application/json".into()),
        ),
        (Value::Integer(3.into()), Value::Text("deflate".into())),
    ]);
    let mut out = RAIN_META_V1_PREFIX.to_vec();
    let _ = ciborium::into_writer(&map, &mut out);
    out
}

/// Decodes receipt information found on chain.
pub fn decode(bytes: &[u8]) -> Result<ReceiptInfo, MetaError> {
    let body = bytes
        .strip_prefix(&RAIN_META_V1_PREFIX)
        .ok_or(MetaError::Prefix)?;
    let value: Value = ciborium::from_reader(body).map_err(|e| MetaError::Cbor(e.to_string()))?;
    let Value::Map(entries) = value else {
        return Err(MetaError::Shape);
    };
    let key = |k: u8| {
        entries
            .iter()
            .find(|(key, _)| matches!(key, Value::Integer(i) if *i == Integer::from(k)))
            .map(|(_, v)| v)
    };
    let Some(Value::Bytes(payload)) = key(0) else {
        return Err(MetaError::Shape);
    };
    let deflated = matches!(key(3), Some(Value::Text(t)) if t == "deflate");
    let json = if deflated {
        // "deflate" is zlib-wrapped (as HTTP and pako write it); accept a raw stream too.
        let mut json = Vec::new();
        let zlib = ZlibDecoder::new(payload.as_slice())
            .take(MAX_INFLATED_BYTES)
            .read_to_end(&mut json);
        if zlib.is_err() {
            json.clear();
            DeflateDecoder::new(payload.as_slice())
                .take(MAX_INFLATED_BYTES)
                .read_to_end(&mut json)
                .map_err(MetaError::Inflate)?;
        }
        json
    } else {
        payload.clone()
    };
    serde_json::from_slice(&json).map_err(MetaError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let info = ReceiptInfo {
            tokenization_request_id: "tr-1".into(),
            issuer_request_id: "mint-abc".into(),
            underlying: "AAPL".into(),
            quantity: "1.5".into(),
            timestamp: 1_700_000_000,
            notes: String::new(),
        };
        let bytes = encode(&info);
        assert_eq!(&bytes[..8], &RAIN_META_V1_PREFIX);
        assert_eq!(decode(&bytes).unwrap(), info);
    }

    #[test]
    fn foreign_bytes_are_not_ours() {
        assert!(matches!(decode(b""), Err(MetaError::Prefix)));
        assert!(matches!(decode(b"hello world"), Err(MetaError::Prefix)));
        let mut junk = RAIN_META_V1_PREFIX.to_vec();
        junk.extend_from_slice(&[0xa0]); // empty map
        assert!(matches!(decode(&junk), Err(MetaError::Shape)));
    }
}
