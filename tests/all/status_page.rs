//! The status page in a real browser: headless Chromium (Debian's
//! `chromium`) logs in through the page's own form, as an operator would,
//! after a known sequence of events, and the test reads what the page
//! shows. A screenshot is saved as `target/status.png`.
//!
//! Chromium is driven over the DevTools protocol: the operator key must
//! be typed into the form (a key never goes in a URL), which `--dump-dom`
//! alone cannot do. Without `chromium` the test is skipped, unless `CI` is
//! set: there it must run (`.ci/run` installs it).

use crate::common::*;
use crate::observe::{acme, send, sign_up, ADMIN_KEY};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// How long any one step in the browser may take.
const STEP: Duration = Duration::from_secs(30);

/// `chromium` on PATH, if any.
fn chromium() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("chromium"))
        .find(|p| p.is_file())
}

/// Headless Chromium with a fresh profile, killed when dropped.
struct Browser {
    child: Child,
    _profile: PluginsDir,
    /// The browser's DevTools WebSocket.
    url: String,
}

impl Browser {
    fn start(chromium: &Path) -> Browser {
        let profile = PluginsDir::new();
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep reading (a full pipe would stop the browser).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(STEP)
            .expect("chromium says where DevTools listens");
        Browser {
            child,
            _profile: profile,
            url,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page of the browser, over the DevTools protocol.
struct Page {
    socket: Socket,
    session: String,
    next_id: u64,
}

impl Page {
    async fn open(browser: &Browser, url: &str) -> Page {
        let (socket, _) = tokio_tungstenite::connect_async(browser.url.as_str())
            .await
            .expect("the DevTools socket");
        let mut page = Page {
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = page
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        page.session = attached["sessionId"].as_str().unwrap().to_owned();
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        page.call("Page.navigate", json!({"url": url})).await;
        page
    }

    /// Sends a command and waits for its answer (events are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(command.to_string().into()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(STEP, async {
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .expect("the socket is open")
                    .unwrap();
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method}"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    async fn wait_for(&mut self, expression: &str) {
        let started = Instant::now();
        while self.eval(expression).await != json!(true) {
            let html = self.eval("document.documentElement.outerHTML").await;
            assert!(
                started.elapsed() < STEP,
                "the page never showed `{expression}`: {html}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the status page test: install Debian's `chromium` package"
        );
        eprintln!("SKIPPED status_page_in_headless_chromium: no `chromium` on PATH (apt-get install chromium)");
        return;
    };
    let _timing = timing_sensitive().await;

    // acme (the hostile guest, 400 ms budget) and beta, whose second file
    // is broken and has markup in its name.
    let dir = PluginsDir::new();
    let keys = acme(&dir);
    dir.plugin("beta", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .file("beta", "20-<i>broken.wasm", b"\0asm but not really")
        .settings("beta", "[auth]\nmode = \"none\"\n");
    let host = ServeProcess::start(dir.path(), &["--admin-keys", keys.to_str().unwrap()]);
    let base = host.base.as_str();

    // Allowed, denied (with markup in the plugin's message), timed out.
    assert_eq!(send(base, "acme", &sign_up("ok")).await.0, StatusCode::OK);
    let markup = "<b id=\"injected\">bold</b><img src=x>";
    let (status, _) = send(base, "acme", &sign_up(markup)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        send(base, "acme", &sign_up("sleep")).await.0,
        StatusCode::GATEWAY_TIMEOUT
    );

    // The operator opens the page, gets the login form, types the key.
    let browser = Browser::start(&chromium);
    let mut page = Page::open(&browser, &format!("{base}/status")).await;
    page.wait_for("document.readyState === 'complete' && !!document.querySelector('#key')")
        .await;
    page.eval(&format!(
        "document.querySelector('#key').value = {}; document.querySelector('#login').click(); true",
        json!(ADMIN_KEY)
    ))
    .await;
    page.wait_for(
        "location.pathname === '/status' && document.readyState === 'complete' \
         && !!document.querySelector('#tenants')",
    )
    .await;

    // What the page shows, as a person reads it.
    let seen = page
        .eval(
            r#"(() => {
                const text = el => el ? el.innerText.trim() : null;
                const row = t => [...document.querySelectorAll(`#tenants tr[data-tenant="${t}"] td`)].map(text);
                const failures = [...document.querySelectorAll('#tenant-acme table.failures tr')].slice(1)
                    .map(tr => [...tr.querySelectorAll('td')].map(text));
                const plugins = t => [...document.querySelectorAll(`#tenant-${t} table.plugins tr`)].slice(1)
                    .map(tr => [...tr.querySelectorAll('td')].map(text));
                return {
                    title: document.title,
                    acme: row('acme'),
                    beta: row('beta'),
                    failures,
                    acmePlugins: plugins('acme'),
                    betaPlugins: plugins('beta'),
                    injected: document.querySelectorAll('#injected, img, i, script').length,
                    cookieVisible: document.cookie,
                };
            })()"#,
        )
        .await;
    let html = page.eval("document.documentElement.outerHTML").await;
    let html = html.as_str().unwrap();

    // A screenshot of the whole page, for people to look at.
    let metrics = page.call("Page.getLayoutMetrics", json!({})).await;
    let height = metrics["cssContentSize"]["height"]
        .as_f64()
        .unwrap_or(900.0)
        .clamp(300.0, 4000.0);
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": height as u64, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    let shot = page
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = target_dir().join("status.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());

    assert_eq!(seen["title"], "Triggerfish status", "{seen:#}");
    // acme: 1 plugin, no failing file, 3 invocations, 1 denied, 1 failed.
    let acme_row = &seen["acme"];
    assert_eq!(acme_row[0], "acme", "{seen:#}");
    assert_eq!(
        (
            &acme_row[1],
            &acme_row[2],
            &acme_row[3],
            &acme_row[4],
            &acme_row[5],
            &acme_row[6]
        ),
        (
            &json!("1"),
            &json!("0"),
            &json!("3"),
            &json!("1"),
            &json!("1"),
            &json!("33.3%")
        ),
        "{seen:#}"
    );
    // Recent failures, newest first, with kind and message.
    let failures = seen["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{seen:#}");
    assert_eq!(failures[0][1], "pre-sign-up");
    assert_eq!(failures[0][2], "10-hostile");
    assert_eq!(failures[0][3], "timeout");
    assert!(failures[0][4]
        .as_str()
        .unwrap()
        .contains("did not finish within 400 ms"));
    assert_eq!(failures[1][3], "denied");
    assert_eq!(
        failures[1][4],
        json!(format!("unknown mode {markup}")),
        "shown as text"
    );
    // Plugins with their triggers and hash.
    let acme_plugin = &seen["acmePlugins"][0];
    assert_eq!(acme_plugin[0], "10-hostile");
    assert!(acme_plugin[1].as_str().unwrap().contains("pre-sign-up"));
    assert_eq!(acme_plugin[2].as_str().unwrap().len(), 12, "a short hash");
    assert_eq!(acme_plugin[4], "none");
    // beta: its broken file by name (markup shown as text), with the error.
    assert_eq!(seen["beta"][2], "1", "{seen:#}");
    let broken = seen["betaPlugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row[0] == "20-<i>broken")
        .unwrap_or_else(|| panic!("{seen:#}"));
    assert!(
        broken[4].as_str().unwrap().contains("no-handler"),
        "{broken}"
    );
    // Tenant-controlled markup never became elements, and the session
    // cookie is out of the page's reach (HttpOnly).
    assert_eq!(seen["injected"], 0, "{html}");
    assert_eq!(seen["cookieVisible"], "");
    assert!(
        html.contains("&lt;b id=\"injected\"&gt;")
            || html.contains("&lt;b id=&quot;injected&quot;&gt;")
    );
}
