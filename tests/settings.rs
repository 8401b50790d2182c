//! The real `issuer` binary with hostile or broken settings (issue 11): secrets never appear in
//! `--help` or on stderr, a bad setting stops the process at once with its message, the built-in
//! dev keys are only used when the listener and the RPC are loopback, SIGTERM never waits on a
//! hung RPC, and an RPC that is down at start is waited for while intake is served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const SECRET_API: &str = "api-key-value-that-must-not-show-0123456789";
const SECRET_OPERATOR: &str = "operator-key-value-that-must-not-show-0123";
const SECRET_ALPACA_KEY: &str = "alpaca-key-id-value-must-not-show";
const SECRET_ALPACA: &str = "alpaca-secret-value-must-not-show";
const SECRET_PASSWORD: &str = "keystore-password-value-must-not-show";
const SECRET_RPC: &str = "http://rpcuser:rpcpassword@127.0.0.1:1/?apikey=rpcquerykey";

/// Every setting variable the tests may set, removed so the caller's environment cannot leak in.
const VARS: &[&str] = &[
    "RPC_URL",
    "BOT_PRIVATE_KEY",
    "BOT_KEYSTORE",
    "BOT_KEYSTORE_PASSWORD",
    "ALPACA_BASE_URL",
    "ALPACA_ACCOUNT_ID",
    "ALPACA_API_KEY",
    "ALPACA_API_SECRET",
    "ISSUER_API_KEY",
    "ISSUER_OPERATOR_KEY",
    "ISSUER_ALLOWED_CIDRS",
    "ISSUER_OPERATOR_CIDRS",
    "ISSUER_LISTEN",
    "ISSUER_DB",
    "ISSUER_URL",
    "ISSUER_CRASH_AT",
    "ALPACA_SIGNATURE_KEYS",
    "LOG_FORMAT",
    "RUST_LOG",
];

fn issuer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_issuer"));
    for var in VARS {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn with_secrets(cmd: &mut Command) -> &mut Command {
    cmd.env("BOT_PRIVATE_KEY", SECRET_KEY)
        .env("ISSUER_API_KEY", SECRET_API)
        .env("ISSUER_OPERATOR_KEY", SECRET_OPERATOR)
        .env("ALPACA_API_KEY", SECRET_ALPACA_KEY)
        .env("ALPACA_API_SECRET", SECRET_ALPACA)
        .env("BOT_KEYSTORE_PASSWORD", SECRET_PASSWORD)
        .env("RPC_URL", SECRET_RPC)
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_no_secret(what: &str, all: &str) {
    for secret in [
        SECRET_KEY,
        &SECRET_KEY[2..],
        SECRET_API,
        SECRET_OPERATOR,
        SECRET_ALPACA_KEY,
        SECRET_ALPACA,
        SECRET_PASSWORD,
        "rpcpassword",
        "rpcquerykey",
    ] {
        assert!(!all.contains(secret), "{what} shows {secret:?}:\n{all}");
    }
}

#[test]
fn help_names_secret_variables_but_never_their_values() {
    let subcommands: &[&[&str]] = &[
        &["serve"],
        &["deploy"],
        &["report"],
        &["report", "verify"],
        &["redemption"],
        &["redemption", "list"],
        &["operator"],
        &["operator", "stuck"],
        &["alpaca-sim", "serve"],
        &["alpaca-sim", "mint"],
    ];
    for args in subcommands {
        let output = with_secrets(issuer().args(*args).arg("--help"))
            .output()
            .unwrap();
        let all = text(&output);
        assert!(output.status.success(), "{args:?} --help failed:\n{all}");
        assert_no_secret(&format!("{args:?} --help"), &all);
    }
    let output = with_secrets(issuer().args(["serve", "--help"]))
        .output()
        .unwrap();
    let all = text(&output);
    for name in [
        "BOT_PRIVATE_KEY",
        "ISSUER_API_KEY",
        "ISSUER_OPERATOR_KEY",
        "ALPACA_API_SECRET",
        "BOT_KEYSTORE_PASSWORD",
        "RPC_URL",
    ] {
        assert!(all.contains(name), "serve --help no longer names {name}");
    }
}
