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
    "ISSUER_NETWORKS",
    "ISSUER_NETWORK",
    "CHAIN_ID",
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
        .env(
            "ISSUER_NETWORKS",
            "name=base,rpc=https://u:netrpcpassword@base.example/v2/netrpcquerykey,chain-id=8453",
        )
        .env("ISSUER_HA_ETCD", "http://root:etcdpassword@10.0.0.5:2379")
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
        "netrpcpassword",
        "netrpcquerykey",
        "etcdpassword",
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

/// A key no one else has (not one of anvil's dev accounts).
const OWN_KEY: &str = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";

/// `issuer serve` on a free loopback port over a fresh store, its stderr kept in a file.
struct Serve {
    child: Child,
    url: String,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(rpc_url: &str, configure: impl FnOnce(&mut Command)) -> Serve {
        Serve::spawn(rpc_url, None, configure)
    }

    /// `open_files_max`: run under `ulimit -n` (through sh).
    fn spawn(
        rpc_url: &str,
        open_files_max: Option<u32>,
        configure: impl FnOnce(&mut Command),
    ) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let port = common::loopback_listener().local_addr().unwrap().port();
        let stderr = dir.path().join("stderr.log");
        let mut cmd = match open_files_max {
            None => issuer(),
            Some(max) => {
                let mut sh = Command::new("sh");
                for var in VARS {
                    sh.env_remove(var);
                }
                sh.stdin(Stdio::null()).args([
                    "-c",
                    &format!("ulimit -n {max} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_issuer"),
                ]);
                sh
            }
        };
        cmd.arg("serve")
            .args(["--db", dir.path().join("issuer.redb").to_str().unwrap()])
            .env("ISSUER_LISTEN", format!("127.0.0.1:{port}"))
            .args(["--reconcile-interval-ms", "200"])
            .env("RPC_URL", rpc_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        configure(&mut cmd);
        Serve {
            child: cmd.spawn().unwrap(),
            url: format!("http://127.0.0.1:{port}"),
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the exit; `None` if the process is still running after `within`.
    fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        raw_http::get(&format!("{}{path}", self.url))
    }

    fn wait_for(&self, path: &str, status: u16, within: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some((got, body)) = self.get(path) {
                if got == status {
                    return body;
                }
            }
            assert!(
                started.elapsed() < within,
                "{path} did not answer {status} within {within:?}; last: {:?}\nstderr:\n{}",
                self.get(path),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A tiny blocking HTTP GET over std's TcpStream (the tests here are synchronous).
mod raw_http {
    use std::io::{Read, Write};
    use std::time::Duration;

    pub fn get(url: &str) -> Option<(u16, String)> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let mut stream = std::net::TcpStream::connect(host).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }
}

/// A loopback port with nothing listening on it.
fn dead_port() -> u16 {
    common::loopback_listener().local_addr().unwrap().port()
}

#[tokio::test]
async fn a_bad_setting_stops_the_process_at_once_with_its_message() {
    let anvil = common::anvil(None);
    let rpc = anvil.endpoint();
    let cases: &[(&str, &str, &str)] = &[
        ("ISSUER_API_KEY", "short", "at least 32 characters"),
        ("ISSUER_OPERATOR_KEY", "short", "at least 32 characters"),
        ("ISSUER_ALLOWED_CIDRS", "", "ISSUER_ALLOWED_CIDRS is empty"),
        (
            "ISSUER_ALLOWED_CIDRS",
            " , ",
            "ISSUER_ALLOWED_CIDRS is empty",
        ),
        ("ISSUER_OPERATOR_CIDRS", "nope", "ISSUER_OPERATOR_CIDRS"),
        ("ALPACA_SIGNATURE_KEYS", "k1:not-base64!", "k1"),
        ("ISSUER_HTTP_CONNECTIONS_MAX", "0", "connection limit"),
        ("CONFIRMATIONS", "0", "CONFIRMATIONS"),
        ("HEAD_POLL_MS", "0", "HEAD_POLL_MS must be from 1 to 60000"),
        (
            "HEAD_POLL_MS",
            "18446744073709551615",
            "HEAD_POLL_MS must be from 1 to 60000",
        ),
        ("ALPACA_BASE_URL", "not a url", "base_url"),
        // Several networks: a list missing what it needs, an RPC on another chain than
        // configured (anvil answers 31337), a per-network key that is not there.
        (
            "ISSUER_NETWORKS",
            "name=base,rpc=http://127.0.0.1:1",
            "every network needs name, rpc and chain-id",
        ),
        ("CHAIN_ID", "1", "answers chain id 31337, configured 1"),
    ];
    let with_rpc = [
        (
            format!("name=base,rpc={rpc},chain-id=8453"),
            "answers chain id 31337, configured 8453".to_owned(),
        ),
        (
            format!("name=anvil,rpc={rpc},chain-id=31337,key-env=NO_SUCH_KEY_VAR"),
            "NO_SUCH_KEY_VAR, which is not set".to_owned(),
        ),
    ];
    let cases: Vec<(&str, &str, &str)> = cases
        .iter()
        .copied()
        .chain(
            with_rpc
                .iter()
                .map(|(v, m)| ("ISSUER_NETWORKS", v.as_str(), m.as_str())),
        )
        .collect();
    for (var, value, message) in cases {
        let mut serve = Serve::start(&rpc, |cmd| {
            cmd.env(var, value);
        });
        let status = serve
            .exit_within(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{var}={value:?}: still running\n{}", serve.stderr()));
        let stderr = serve.stderr();
        assert!(!status.success(), "{var}={value:?} exited 0");
        assert!(stderr.contains(message), "{var}={value:?}: {stderr}");
        assert!(
            !stderr.contains("issuer serving"),
            "{var}={value:?}: {stderr}"
        );
        assert!(
            serve.get("/health").is_none(),
            "{var}={value:?}: port opened"
        );
    }
}

#[test]
fn dev_keys_are_refused_unless_listener_and_rpc_are_loopback() {
    for rpc in [
        "http://127.0.0.1@10.255.255.1:8545".to_owned(),
        "http://localhost.invalid:8545".to_owned(),
        "http://127.0.0.1.nip.io:8545".to_owned(),
    ] {
        // No key given: the built-in dev key would be used.
        let mut serve = Serve::start(&rpc, |_| {});
        let status = serve
            .exit_within(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{rpc}: still running\n{}", serve.stderr()));
        assert!(!status.success());
        let stderr = serve.stderr();
        assert!(
            stderr.contains("BOT_PRIVATE_KEY or BOT_KEYSTORE is required"),
            "{rpc}: {stderr}"
        );

        // One of anvil's other dev keys, set explicitly.
        let mut serve = Serve::start(&rpc, |cmd| {
            cmd.env("BOT_PRIVATE_KEY", common::STRANGER_KEY)
                .env("ISSUER_API_KEY", SECRET_API)
                .env("ISSUER_OPERATOR_KEY", SECRET_OPERATOR);
        });
        let status = serve
            .exit_within(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{rpc}: still running\n{}", serve.stderr()));
        assert!(!status.success());
        let stderr = serve.stderr();
        assert!(
            stderr.contains("anvil's public dev keys"),
            "{rpc}: {stderr}"
        );
    }
    // A loopback RPC but a listener on every interface: the dev key is refused before binding.
    let rpc = format!("http://127.0.0.1:{}", dead_port());
    let mut serve = Serve::start(&rpc, |cmd| {
        cmd.env("BOT_PRIVATE_KEY", common::STRANGER_KEY)
            .env("ISSUER_API_KEY", SECRET_API)
            .env("ISSUER_OPERATOR_KEY", SECRET_OPERATOR)
            .env("ISSUER_LISTEN", "0.0.0.0:0");
    });
    let status = serve
        .exit_within(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running\n{}", serve.stderr()));
    assert!(!status.success());
    let stderr = serve.stderr();
    assert!(stderr.contains("dev keys are only accepted"), "{stderr}");
}

#[test]
fn rpc_credentials_never_reach_the_logs() {
    let port = dead_port();
    let rpc =
        format!("http://rpcuser:rpcpassword@127.0.0.1:{port}/v3/PATHAPIKEY?apikey=rpcquerykey");
    let mut serve = Serve::start(&rpc, |cmd| {
        cmd.env("BOT_PRIVATE_KEY", OWN_KEY);
    });
    // Long enough for the start line and a few failed connection attempts.
    std::thread::sleep(Duration::from_millis(1500));
    serve.sigterm();
    serve.exit_within(Duration::from_secs(5));
    let stderr = serve.stderr();
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    for secret in ["rpcuser", "rpcpassword", "PATHAPIKEY", "rpcquerykey"] {
        assert!(!stderr.contains(secret), "stderr shows {secret}:\n{stderr}");
    }
}

#[test]
fn sigterm_does_not_wait_for_a_hung_rpc() {
    // An RPC that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rpc = format!("http://{}", hung.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in hung.incoming().take(16) {
            open.push(stream);
        }
    });
    let mut serve = Serve::start(&rpc, |_| {});
    serve.wait_for("/health", 200, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    serve.sigterm();
    let status = serve.exit_within(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {:?}\n{}",
        asked.elapsed(),
        serve.stderr()
    );
    drop(held);
}

#[test]
fn rpc_down_at_start_serves_intake_and_reconciles_once_it_is_back() {
    let port = dead_port();
    let rpc = format!("http://127.0.0.1:{port}");
    let serve = Serve::start(&rpc, |_| {});
    serve.wait_for("/health", 200, Duration::from_secs(10));
    let body = serve.wait_for("/readyz", 503, Duration::from_secs(5));
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "not ready", "{answer}");
    assert_eq!(answer["failing"], serde_json::json!(["rpc"]), "{answer}");
    assert_eq!(answer["checks"]["store"], "ok", "{answer}");

    // Intake works while the RPC is down.
    let (status, _) = post_operator(
        &serve.url,
        "/operator/accounts",
        r#"{"email":"ap@example.com"}"#,
    );
    assert_eq!(status, 200);

    let _anvil = common::anvil_with(|builder| builder.port(port));
    let body = serve.wait_for("/readyz", 200, Duration::from_secs(20));
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "ready", "{answer}");
    let started = Instant::now();
    while !serve.stderr().contains("reconciler starting") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            serve.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post_operator(base: &str, path: &str, body: &str) -> (u16, String) {
    let host = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nX-OPERATOR-KEY: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        issuer::cli::LOCAL_OPERATOR_KEY,
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text)
}

#[test]
fn bytes_from_the_rpc_node_are_escaped_in_human_logs() {
    // A node that answers every call with an error whose text carries newlines and an escape.
    let node = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rpc = format!("http://{}", node.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in node.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "node trouble\nFORGED-LINE INFO issuer: all good\x1b[2J";
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let mut serve = Serve::start(&rpc, |cmd| {
        cmd.env("LOG_FORMAT", "human");
    });
    let started = Instant::now();
    while !serve.stderr().contains("FORGED-LINE") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the node's answer never reached the log:\n{}",
            serve.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    serve.sigterm();
    serve.exit_within(Duration::from_secs(5));
    let stderr = serve.stderr();
    for line in stderr.lines() {
        assert!(
            !line.starts_with("FORGED-LINE"),
            "a forged log line:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains('\u{1b}'),
        "a raw escape character:\n{stderr}"
    );
}

#[test]
fn half_sent_requests_under_a_small_open_file_limit_do_not_stop_health() {
    let rpc = format!("http://127.0.0.1:{}", dead_port());
    let serve = Serve::spawn(&rpc, Some(256), |_| {});
    serve.wait_for("/health", 200, Duration::from_secs(10));
    let host = serve.url.strip_prefix("http://").unwrap().to_owned();
    let mut held = Vec::new();
    for _ in 0..300 {
        let Ok(mut stream) = std::net::TcpStream::connect(&host) else {
            continue;
        };
        let _ = write!(
            stream,
            "POST /operator/accounts HTTP/1.1\r\nHost: issuer\r\nX-OPERATOR-KEY: {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
            issuer::cli::LOCAL_OPERATOR_KEY
        );
        held.push(stream);
    }
    let started = Instant::now();
    serve.wait_for("/health", 200, Duration::from_secs(3));
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(held);
}
