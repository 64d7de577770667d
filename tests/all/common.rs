//! Helpers shared by the tests.

use serde_json::{json, Value};
use std::sync::Arc;
use triggerfish::dispatch::{ChainError, Dispatcher, InvokeError};
use triggerfish::engine::{Runtime, RuntimeConfig};
use triggerfish::plugin::PluginLoader;
use triggerfish::sources::http::server::{bind, serve, ServerLimits};
use triggerfish::sources::http::{router, Api};
use triggerfish::tenant::operator::OperatorConfig;
use triggerfish::tenant::registry::Tenants;
use triggerfish::tenant::Tenant;
pub use triggerfish_test_support::{guests, PluginsDir};

/// An engine sized for tests: a small pool, so many tests can run at once.
pub fn runtime() -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeConfig {
            max_instances: 32,
            max_memory_bytes: 128 << 20,
            ..RuntimeConfig::default()
        })
        .expect("an engine"),
    )
}

/// A loader with no compile cache on disk.
pub fn loader() -> PluginLoader {
    PluginLoader::new(runtime(), None)
}

/// The operator's configuration the tests run under: high ceilings and
/// any outbound host, so that the tests of a tenant's own limits and
/// `allowed-hosts` see only the tenant's settings at work (the built-in
/// defaults still apply where a tenant sets nothing; `tenancy.rs` tests
/// the operator's ceilings themselves).
pub fn operator() -> OperatorConfig {
    OperatorConfig::parse(
        "[defaults.limits]\n\
         timeout-ms = 60000\nattempts = 10\nfuel = 100_000_000_000_000\nmemory-mib = 128\n\
         table-elements = 1_000_000\noutput-kib = 1_048_576\nlog-kib = 1_048_576\n\
         [defaults.outbound]\nallowed-hosts = [\"*\"]\ntimeout-ms = 60000\n",
        128 << 20,
    )
    .expect("a valid operator configuration")
}

pub async fn tenant(dir: &PluginsDir, name: &str) -> Tenant {
    tenant_with(&loader(), dir, name).await
}

pub async fn tenant_with(loader: &PluginLoader, dir: &PluginsDir, name: &str) -> Tenant {
    let operator = operator();
    Tenant::load(
        loader,
        operator.for_tenant(name),
        name,
        &dir.tenant_dir(name),
        None,
    )
    .await
}

pub async fn tenants(dir: &PluginsDir) -> Arc<Tenants> {
    tenants_from(loader(), dir).await
}

pub async fn tenants_from(loader: PluginLoader, dir: &PluginsDir) -> Arc<Tenants> {
    Arc::new(
        Tenants::open_with(loader, operator(), dir.path())
            .await
            .expect("tenants"),
    )
}

/// Serialises the tests that measure something (a reload within a second,
/// a timeout within its overshoot, resident memory) with the one that
/// compiles a 12 MB JavaScript component on every core: on a two-core
/// machine the compile would otherwise be what they measure.
pub async fn timing_sensitive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Runs an event through the dispatcher, as every way in does.
pub async fn invoke(tenant: &Tenant, event: Value) -> Result<Value, InvokeError> {
    Dispatcher::new().dispatch(tenant, event).await
}

/// Runs an event and expects the chain to fail.
pub async fn chain_error(tenant: &Tenant, event: Value) -> ChainError {
    match invoke(tenant, event).await {
        Err(InvokeError::Chain(error)) => error,
        other => panic!("expected a chain error, got {other:?}"),
    }
}

/// The HTTP API on a loopback port, for as long as the value lives.
pub struct Server {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The real server path, with the default limits.
    pub async fn start(tenants: Arc<Tenants>) -> Server {
        Server::start_with(tenants, ServerLimits::default()).await
    }

    pub async fn start_with(tenants: Arc<Tenants>, limits: ServerLimits) -> Server {
        let api = Api {
            tenants,
            dispatcher: Arc::new(Dispatcher::new()),
            streams: None,
            admin: None,
            health: Default::default(),
        };
        Server::serve(api, limits)
    }

    fn serve(api: Api, limits: ServerLimits) -> Server {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            serve(listener, router(api), limits, std::future::pending())
                .await
                .unwrap();
        });
        Server { base, task }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A PreSignUp event as Cognito sends it.
pub fn pre_sign_up(email: &str) -> Value {
    json!({
        "version": "1",
        "triggerSource": "PreSignUp_SignUp",
        "region": "us-east-1",
        "userPoolId": "us-east-1_EXAMPLE",
        "userName": "jane",
        "callerContext": {"awsSdkVersion": "aws-sdk-js-3.400.0", "clientId": "client-1"},
        "request": {
            "userAttributes": {"email": email, "name": "Jane"},
            "validationData": null,
            "clientMetadata": {"source": "web"}
        },
        "response": {"autoConfirmUser": false, "autoVerifyEmail": false, "autoVerifyPhone": false}
    })
}

/// An event with what every user pool trigger requires, for `source`.
pub fn user_pool_event(version: &str, source: &str) -> Value {
    json!({
        "version": version,
        "triggerSource": source,
        "region": "eu-west-1",
        "userPoolId": "eu-west-1_EXAMPLE",
        "userName": "jane",
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown", "clientId": "client-1"},
        "request": {
            "userAttributes": {"email": "jane@example.com"},
            "challengeName": "CUSTOM_CHALLENGE",
            "challengeAnswer": "42",
            "codeParameter": "{####}",
            "type": "customEmailSenderRequestV1"
        },
        "response": {}
    })
}

/// The SyncTrigger event of the Cognito Sync documentation.
pub fn sync_event() -> Value {
    json!({
        "version": 2,
        "eventType": "SyncTrigger",
        "region": "us-east-1",
        "identityPoolId": "identityPoolId",
        "identityId": "identityId",
        "datasetName": "datasetName",
        "datasetRecords": {
            "SampleKey1": {"oldValue": "oldValue1", "newValue": "newValue1", "op": "replace"},
            "SampleKey2": {"oldValue": "oldValue2", "newValue": "newValue2", "op": "replace"}
        }
    })
}

/// Runs an event and expects the chain to answer.
pub async fn run(tenant: &Tenant, event: Value) -> Value {
    invoke(tenant, event).await.expect("the chain runs")
}

/// The common parameters of a user pool event, around `request` and
/// `response`.
pub fn cognito_event(version: &str, source: &str, request: Value, response: Value) -> Value {
    json!({
        "version": version,
        "triggerSource": source,
        "region": "us-east-1",
        "userPoolId": "us-east-1_EXAMPLE",
        "userName": "jane.doe",
        "callerContext": {
            "awsSdkVersion": "aws-sdk-unknown-unknown",
            "clientId": "1example23456789"
        },
        "request": request,
        "response": response
    })
}

/// A user's attributes as Cognito sends them.
pub fn user_attributes() -> Value {
    json!({
        "sub": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
        "cognito:user_status": "CONFIRMED",
        "email_verified": "true",
        "email": "jane@example.com",
        "custom:department": "engineering"
    })
}

/// One step of a custom auth session.
pub fn challenge(name: &str, result: bool, metadata: Option<&str>) -> Value {
    json!({"challengeName": name, "challengeResult": result, "challengeMetadata": metadata})
}

pub fn define_event(session: Vec<Value>) -> Value {
    cognito_event(
        "1",
        "DefineAuthChallenge_Authentication",
        json!({
            "userAttributes": user_attributes(),
            "session": session,
            "clientMetadata": {},
            "userNotFound": false
        }),
        json!({"challengeName": null, "issueTokens": false, "failAuthentication": false}),
    )
}

pub fn create_event(session: Vec<Value>) -> Value {
    cognito_event(
        "1",
        "CreateAuthChallenge_Authentication",
        json!({
            "userAttributes": user_attributes(),
            "challengeName": "CUSTOM_CHALLENGE",
            "session": session,
            "clientMetadata": {},
            "userNotFound": false
        }),
        json!({
            "publicChallengeParameters": null,
            "privateChallengeParameters": null,
            "challengeMetadata": null
        }),
    )
}

/// A verify-auth-challenge-response event; `answerCorrect` starts unset,
/// so a plugin that forgets to set it shows.
pub fn verify_event(private: Value, answer: &str) -> Value {
    cognito_event(
        "1",
        "VerifyAuthChallengeResponse_Authentication",
        json!({
            "userAttributes": user_attributes(),
            "privateChallengeParameters": private,
            "challengeAnswer": answer,
            "clientMetadata": {},
            "userNotFound": false
        }),
        json!({"answerCorrect": null}),
    )
}

/// What define-auth-challenge decided: (challenge, issue tokens, fail).
pub async fn define(tenant: &Tenant, session: Vec<Value>) -> (Value, Value, Value) {
    let out = run(tenant, define_event(session)).await;
    let r = &out["response"];
    (
        r["challengeName"].clone(),
        r["issueTokens"].clone(),
        r["failAuthentication"].clone(),
    )
}

/// `triggerfish serve` as a child process on a loopback port it picks,
/// killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    /// `http://ADDR`.
    pub base: String,
    /// The last lines of its log, to show when a test fails.
    log: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl ServeProcess {
    /// Starts `serve` on `plugins_dir` with `args` beside `--listen` and
    /// `--plugins-dir`, and returns once it says every tenant is loaded
    /// (before that, /healthz answers 503 "starting").
    pub fn start(plugins_dir: &std::path::Path, args: &[&str]) -> ServeProcess {
        ServeProcess::start_with_log(plugins_dir, args, "info,cranelift=warn,wasmtime=warn")
    }

    /// [`ServeProcess::start`] with `rust_log` as its `RUST_LOG`.
    pub fn start_with_log(
        plugins_dir: &std::path::Path,
        args: &[&str],
        rust_log: &str,
    ) -> ServeProcess {
        ServeProcess::launch(plugins_dir, "127.0.0.1:0", args, rust_log)
    }

    /// [`ServeProcess::start`] listening on `listen`: a host restarted
    /// where a load balancer expects it.
    pub fn start_at(
        plugins_dir: &std::path::Path,
        listen: std::net::SocketAddr,
        args: &[&str],
    ) -> ServeProcess {
        let log = "info,cranelift=warn,wasmtime=warn";
        ServeProcess::launch(plugins_dir, &listen.to_string(), args, log)
    }

    fn launch(
        plugins_dir: &std::path::Path,
        listen: &str,
        args: &[&str],
        rust_log: &str,
    ) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_triggerfish"))
            .args(["serve", "--listen", listen, "--plugins-dir"])
            .arg(plugins_dir)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        // Read the log for as long as the process lives (a full pipe would
        // stop it), and hand over the address it says it serves on.
        let log = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let address = Some(&line)
                    .filter(|line| line.contains(" serving "))
                    .and_then(|line| line.split_once("address="))
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .or_else(|| serving_address_json(&line))
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
                if let Some(address) = address {
                    let _ = address_tx.send(address);
                }
                let mut lines = lines.lock().unwrap();
                if lines.len() == 5000 {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let address = address_rx.recv_timeout(std::time::Duration::from_secs(120));
        let Ok(addr) = address else {
            let _ = child.kill();
            let log = log.lock().unwrap().iter().cloned().collect::<Vec<_>>();
            panic!("the host did not start serving: {}", log.join("\n"));
        };
        ServeProcess {
            child,
            addr,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// The last lines of its log (at most 5000).
    pub fn last_log(&self) -> String {
        let lines = self.log.lock().unwrap();
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The address in `--log-format json`'s "serving" line.
fn serving_address_json(line: &str) -> Option<&str> {
    if !line.contains(r#""message":"serving""#) {
        return None;
    }
    let (_, rest) = line.split_once(r#""address":""#)?;
    rest.split('"').next()
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
