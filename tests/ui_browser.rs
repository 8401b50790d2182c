//! The operator page `/ui` in a real headless browser (Debian's chromium driven through
//! chromedriver's WebDriver protocol): it loads, shows a mint made through the simulator, lists a
//! mint whose callback Alpaca refused as stuck, and its Retry button (after its confirmation
//! step) starts it again, after which the callback is acknowledged. A screenshot is written to
//! `target/ui-operator-page.png` for people to look at.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`.ci/run` installs them); set
//! `ISSUER_SKIP_BROWSER_TESTS=1` to skip on a machine without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::stack::{eventually, Issuer, World};
use issuer::sim::{FaultsPatch, Refusal};
use reconciler::{Callback, IssuerRequestId, Policy, TokenizationRequestId};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    /// chromedriver leads its own process group, and the chromium it started is in it: the whole
    /// group goes, or every run would leave a headless browser behind.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Option<Driver> {
        let (chromium, chromedriver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !std::path::Path::new(chromedriver).exists() || !std::path::Path::new(chromium).exists()
        {
            assert!(
                std::env::var("ISSUER_SKIP_BROWSER_TESTS").as_deref() == Ok("1"),
                "chromium and chromedriver are needed: apt-get install chromium chromium-driver \
                 (or ISSUER_SKIP_BROWSER_TESTS=1)"
            );
            return None;
        }
        let port = common::loopback_listener().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(20), "chromedriver", || async {
            http.get(format!("{url}/status")).send().await.is_ok()
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let answer: Value = http
            .post(format!("{url}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        Some(Driver {
            child,
            url,
            http,
            session,
            _profile: profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.url, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The first element matching `css`, if any.
    async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    async fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css).await?;
        let text = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await;
        text.as_str().map(str::to_owned)
    }

    async fn click(&self, css: &str) {
        let element = self
            .find(css)
            .await
            .unwrap_or_else(|| panic!("nothing matches {css}"));
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await.unwrap();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn screenshot(&self, path: &std::path::Path) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_page_shows_mints_and_its_retry_button_restarts_a_stuck_one() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-ui-ok", "1.5").await;
    // A mint whose callback Alpaca refuses: it stops and waits for an operator.
    world
        .sim
        .patch_faults(&FaultsPatch {
            refuse_mint_callback: Some(Some(Refusal {
                status: 404,
                message: "tokenization request not found".into(),
            })),
            ..FaultsPatch::default()
        })
        .unwrap();
    world.mint(&issuer.url, "tr-ui-stuck", "2").await;
    let stuck = IssuerRequestId::for_mint(&TokenizationRequestId::parse("tr-ui-stuck").unwrap());
    eventually(Duration::from_secs(30), "callback refused", || async {
        matches!(
            issuer.store.mint(&stuck).unwrap().unwrap().intent.callback,
            Callback::Refused { .. }
        )
    })
    .await;

    driver.go(&format!("{}/ui", issuer.url)).await;
    driver
        .type_into("#key", issuer::cli::LOCAL_OPERATOR_KEY)
        .await;
    driver.click("#load").await;
    let ok_row = IssuerRequestId::for_mint(&TokenizationRequestId::parse("tr-ui-ok").unwrap());
    eventually(Duration::from_secs(15), "the mints on the page", || async {
        driver
            .text(&format!("td[data-mint='{ok_row}']"))
            .await
            .is_some_and(|t| t == "acked")
            && driver
                .text(&format!("td[data-mint='{stuck}']"))
                .await
                .is_some_and(|t| t == "refused")
    })
    .await;
    let page = driver.text("body").await.unwrap();
    assert!(page.contains("tr-ui-ok"), "{page}");
    assert!(page.contains("mint callback refused: 404"), "{page}");
    assert!(page.contains("AAPL"), "{page}");
    let shot =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-operator-page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    driver.screenshot(&shot).await;

    // Alpaca fixed its side; the operator retries from the page: first click arms, second acts.
    world
        .sim
        .patch_faults(&FaultsPatch {
            refuse_mint_callback: Some(None),
            ..FaultsPatch::default()
        })
        .unwrap();
    let button = format!("#stuck button[data-action='Retry'][data-id='{stuck}']");
    driver.click(&button).await;
    assert_eq!(
        driver.text(&button).await.as_deref(),
        Some("Confirm retry"),
        "a confirmation step before acting"
    );
    assert!(matches!(
        issuer.store.mint(&stuck).unwrap().unwrap().intent.callback,
        Callback::Refused { .. }
    ));
    driver.click(&button).await;
    eventually(Duration::from_secs(30), "callback acknowledged", || async {
        matches!(
            issuer.store.mint(&stuck).unwrap().unwrap().intent.callback,
            Callback::Acked { .. }
        )
    })
    .await;
    driver.click("#load").await;
    eventually(
        Duration::from_secs(15),
        "the page shows it acked",
        || async {
            driver
                .text(&format!("td[data-mint='{stuck}']"))
                .await
                .is_some_and(|t| t == "acked")
        },
    )
    .await;
    driver.screenshot(&shot).await;
    issuer.stop().await;
}
