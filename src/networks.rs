//! The networks one issuer serves. Each EVM network has its own RPC, the chain id it must answer,
//! confirmations, log range, fee cap and (optionally) its own signer; each runs its own reconcile
//! loop, so a slow or stalled RPC on one delays nothing on another.
//!
//! Written as `ISSUER_NETWORKS` (or repeated `--networks`): entries separated by `;` or new
//! lines, each a comma-separated list of `key=value`:
//!
//! ```text
//! name=base,rpc=https://base.example/KEY,chain-id=8453,confirmations=3,log-range=2000,max-fee-gwei=50,key-env=BASE_BOT_KEY
//! ```
//!
//! `name`, `rpc` and `chain-id` are required; the others default to the single-network settings
//! (`CONFIRMATIONS`, 2000 blocks, `MAX_FEE_PER_GAS_GWEI`, the one `BOT_*` signer). `key-env`
//! names an environment variable holding that network's hex private key, so no key is written
//! in the list itself. Without a list, today's single-RPC settings are a one-network list.

use reconciler::Network;

/// One network as configured, before its signer is built or its RPC reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Alpaca's name for the network (`base`, `ethereum`, ... or a configured local one).
    pub name: Network,
    pub rpc_url: String,
    /// The chain id the RPC must answer; a mismatch refuses to start. `None` only for the
    /// single-network settings of old, where it is not checked unless `CHAIN_ID` is set.
    pub chain_id: Option<u64>,
    pub confirmations: Option<u64>,
    pub log_range_blocks: Option<u64>,
    pub max_fee_per_gas_gwei: Option<u64>,
    /// Environment variable holding this network's private key; `None`: the shared signer.
    pub key_env: Option<String>,
}

/// Why a network list does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ISSUER_NETWORKS: {0}")]
pub struct NetworksError(String);

/// Parses a network list (see the module docs). Every entry is checked: a missing required key,
/// an unknown key, a number that does not parse, a zero where one makes no sense, the same
/// network or chain id twice.
pub fn parse(text: &str) -> Result<Vec<NetworkSpec>, NetworksError> {
    let fail = |m: String| Err(NetworksError(m));
    let mut out: Vec<NetworkSpec> = Vec::new();
    for entry in text
        .split([';', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (mut name, mut rpc, mut chain_id) = (None, None, None);
        let (mut confirmations, mut log_range_blocks, mut max_fee_per_gas_gwei, mut key_env) =
            (None, None, None, None);
        for field in entry.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let Some((key, value)) = field.split_once('=') else {
                return fail(format!("`{}` is not key=value", shown(field)));
            };
            let (key, value) = (key.trim(), value.trim());
            let number = |what: &str| -> Result<u64, NetworksError> {
                match value.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(NetworksError(format!(
                        "{what} must be a whole number of at least 1, got {value:?}"
                    ))),
                }
            };
            match key {
                "name" => {
                    name = Some(Network::parse(value).map_err(|e| NetworksError(e.to_string()))?);
                }
                "rpc" => {
                    reqwest::Url::parse(value).map_err(|e| {
                        NetworksError(format!(
                            "rpc is not a URL ({e}): {}",
                            crate::config::redact_url(value)
                        ))
                    })?;
                    rpc = Some(value.to_owned());
                }
                "chain-id" => chain_id = Some(number("chain-id")?),
                "confirmations" => confirmations = Some(number("confirmations")?),
                "log-range" => log_range_blocks = Some(number("log-range")?),
                "max-fee-gwei" => max_fee_per_gas_gwei = Some(number("max-fee-gwei")?),
                "key-env" if !value.is_empty() => key_env = Some(value.to_owned()),
                other => {
                    return fail(format!(
                        "unknown key {other:?} (name, rpc, chain-id, confirmations, log-range, max-fee-gwei, key-env)"
                    ))
                }
            }
        }
        let (Some(name), Some(rpc), Some(chain_id)) = (name, rpc, chain_id) else {
            return fail("every network needs name, rpc and chain-id".to_owned());
        };
        if out.iter().any(|n| n.name == name) {
            return fail(format!("network {name} is listed twice"));
        }
        if out.iter().any(|n| n.chain_id == Some(chain_id)) {
            return fail(format!("chain id {chain_id} is listed twice"));
        }
        out.push(NetworkSpec {
            name,
            rpc_url: rpc,
            chain_id: Some(chain_id),
            confirmations,
            log_range_blocks,
            max_fee_per_gas_gwei,
            key_env,
        });
    }
    if out.is_empty() {
        return fail("no network listed".to_owned());
    }
    Ok(out)
}

/// A field as it may be shown in an error: a URL with its credentials redacted.
fn shown(field: &str) -> String {
    if field.contains("://") {
        crate::config::redact_url(field)
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_networks_parse_with_defaults_left_open() {
        let list = parse(
            "name=base,rpc=http://127.0.0.1:1,chain-id=8453,confirmations=3;\n name=ethereum, rpc=http://127.0.0.1:2, chain-id=1, key-env=ETH_KEY, log-range=500, max-fee-gwei=80",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name.as_str(), "base");
        assert_eq!(list[0].confirmations, Some(3));
        assert_eq!(list[0].key_env, None);
        assert_eq!(list[1].chain_id, Some(1));
        assert_eq!(list[1].log_range_blocks, Some(500));
        assert_eq!(list[1].max_fee_per_gas_gwei, Some(80));
        assert_eq!(list[1].key_env.as_deref(), Some("ETH_KEY"));
    }

    #[test]
    fn refusals_name_the_problem() {
        for (text, says) in [
            ("name=base,rpc=http://127.0.0.1:1", "needs name, rpc and chain-id"),
            ("name=base,rpc=nope,chain-id=1", "rpc is not a URL"),
            ("name=base,rpc=http://127.0.0.1:1,chain-id=0", "at least 1"),
            ("name=base,rpc=http://127.0.0.1:1,chain-id=1,colour=red", "unknown key"),
            (
                "name=base,rpc=http://127.0.0.1:1,chain-id=1;name=base,rpc=http://127.0.0.1:2,chain-id=2",
                "listed twice",
            ),
            (
                "name=base,rpc=http://127.0.0.1:1,chain-id=1;name=eth,rpc=http://127.0.0.1:2,chain-id=1",
                "chain id 1 is listed twice",
            ),
            ("", "no network"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
