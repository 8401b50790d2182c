//! Settings shared by the subcommands. Every setting is a flag with an environment variable
//! (clap), listed in `.env.example`. Secrets are [`Secret`]s: never printed by `Debug` or logs.

use ipnet::IpNet;
use std::fmt;
use std::str::FromStr;

/// A value that must not reach a log: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself, for the one place that needs it (a header, a comparison, a signer).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Default keys of the local stack. Refused unless everything listens and connects on loopback.
pub const LOCAL_API_KEY: &str = "local-dev-alpaca-key-0123456789abcdef";
pub const LOCAL_OPERATOR_KEY: &str = "local-dev-operator-key-0123456789abcdef";

/// The well-known first anvil dev account key. Only ever a default for the local stack: `serve`
/// refuses it unless the RPC URL is on loopback.
pub const ANVIL_DEV_KEY: &str =
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The addresses of anvil's ten dev accounts (mnemonic `test test ... junk`). Their keys are
/// public: a bot signing with one of them is accepted only when everything is on loopback.
pub const ANVIL_DEV_ADDRESSES: [&str; 10] = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
    "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
    "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
    "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
];

/// Whether `address` is one of anvil's dev accounts, whose keys everybody knows.
pub fn is_anvil_dev_account(address: alloy::primitives::Address) -> bool {
    ANVIL_DEV_ADDRESSES
        .iter()
        .any(|dev| dev.parse::<alloy::primitives::Address>() == Ok(address))
}

/// Whether `url` parses and its host is a loopback IP literal or exactly `localhost`. Parsed, not
/// prefix-matched: `http://127.0.0.1@10.0.0.1` (user info) and `http://localhost.example` are not
/// loopback.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// `url` as it may be logged: scheme, host and port only. User info, path, query and fragment
/// can carry credentials (`https://user:pass@host/v3/KEY?apikey=...`); when there were any, the
/// result ends in `/…`. Text that does not parse as a URL is not shown at all.
pub fn redact_url(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return "<unparseable URL>".to_owned();
    };
    let Some(host) = parsed.host_str() else {
        return format!("{}:…", parsed.scheme());
    };
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let hidden = !parsed.username().is_empty()
        || parsed.password().is_some()
        || !matches!(parsed.path(), "" | "/")
        || parsed.query().is_some()
        || parsed.fragment().is_some();
    let tail = if hidden { "/…" } else { "" };
    format!("{}://{host}{port}{tail}", parsed.scheme())
}

/// `text` (an error message, a node's answer) as it may be logged: every URL in it redacted by
/// [`redact_url`] and every control character escaped, so a node or a library cannot put
/// credentials or forged log lines into our logs.
pub fn sanitise_for_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The URL starts at the scheme: the run of letters, digits, '+', '-', '.' before "://".
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | '<' | ','))
            .map_or(rest.len(), |i| at + i);
        escape_into(&mut out, &rest[..start]);
        if start == at {
            escape_into(&mut out, "://");
        } else {
            escape_into(&mut out, &redact_url(&rest[start..end]));
        }
        rest = &rest[end.max(at + 3)..];
    }
    escape_into(&mut out, rest);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() || is_invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// Unicode format characters that render as nothing (zero-width spaces and joiners, direction
/// marks and overrides, the byte order mark): text with them looks like text without them.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// Parses a comma-separated CIDR list (`127.0.0.1/32,::1/128`); a bare address means /32 or /128.
pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("not a CIDR or IP address: {s:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2-hunter2-hunter2-hunter2-x");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }

    #[test]
    fn loopback_is_parsed_not_prefix_matched() {
        for url in [
            "http://127.0.0.1:8545",
            "http://localhost:8545",
            "http://LOCALHOST",
            "http://[::1]:8545/",
            "http://127.9.9.9",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://127.0.0.1@10.255.255.1:8545",
            "http://localhost.invalid:8545",
            "http://localhost@evil.example",
            "http://127.0.0.1.nip.io",
            "http://10.0.0.1",
            "not a url",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn urls_are_logged_without_credentials() {
        assert_eq!(
            redact_url("http://user:PASSWORD@host.example:8545/?apikey=KEY"),
            "http://host.example:8545/…"
        );
        assert_eq!(
            redact_url("https://mainnet.example/v3/APIKEY"),
            "https://mainnet.example/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        let text = "error sending request for url (https://u:p@node.example/v3/APIKEY?x=1): boom\nINFO forged";
        let shown = sanitise_for_log(text);
        assert!(
            !shown.contains("APIKEY") && !shown.contains("u:p"),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("https://node.example/…"), "{shown}");
        assert_eq!(
            sanitise_for_log("a\u{200B}b\u{1b}[31m"),
            "a\\u{200b}b\\u{1b}[31m"
        );
    }

    #[test]
    fn anvil_dev_accounts_are_known() {
        let first: alloy::primitives::Address = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
            .parse()
            .unwrap();
        assert!(is_anvil_dev_account(first));
        assert!(!is_anvil_dev_account(alloy::primitives::Address::ZERO));
    }

    #[test]
    fn cidrs() {
        let nets = parse_cidrs("127.0.0.1, 10.0.0.0/8,::1").unwrap();
        assert_eq!(nets.len(), 3);
        assert!(parse_cidrs("nope").is_err());
    }
}
