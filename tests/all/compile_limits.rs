//! Compiling and probing hostile components is bounded (issue 9, finding
//! 7): shape limits refuse compile bombs before anything compiles, a
//! compile in a child process stops at its CPU limit, failures are
//! remembered by content, and the load-time probe runs with the plugin's
//! own limits.

use crate::common::*;
use std::fmt::Write as _;
use std::time::Duration;
use triggerfish::limits::Limits;
use triggerfish::plugin::compile::{CompileError, Compiler, SubprocessCompiler};
use triggerfish::plugin::shape::{OverLimit, ShapeLimit};
use triggerfish::plugin::{PluginError, PluginLoader};

/// A component holding one core module with these functions (WAT text of
/// each, in order), instantiated (so that it compiles).
fn component_of_functions(functions: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut text = String::from("(component (core module $m\n");
    for function in functions {
        text.push_str(&function);
        text.push('\n');
    }
    text.push_str(") (core instance (instantiate $m)))");
    wat::parse_str(&text).expect("valid component text")
}

/// A pre sign-up "plugin" whose core module runs `start` (WAT
/// instructions) when instantiated and declares `memory_pages` of memory.
/// Its `handle` has not the contract's type: a probe that gets past
/// instantiation fails on the type check instead.
fn plugin_starting_with(start: &str, memory_pages: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (core module $m
                (memory {memory_pages})
                (func $start {start})
                (start $start)
                (func (export "handle") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $handle (result (result)) (canon lift (core func $i "handle")))
            (instance $iface (export "handle" (func $handle)))
            (export "triggerfish:user-pool/pre-sign-up@0.1.0" (instance $iface)))"#
    ))
    .expect("valid component text")
}

fn shape_limit(error: &PluginError) -> Option<ShapeLimit> {
    match error {
        PluginError::CompileLimit(CompileError::Shape(OverLimit { limit, .. })) => Some(*limit),
        _ => None,
    }
}

#[tokio::test]
async fn three_hundred_thousand_empty_functions_are_refused_before_compiling() {
    // 1.2 MB that took 12 s and 2.2 GB to compile.
    let bytes = component_of_functions((0..300_000).map(|_| "(func)".to_owned()));
    let loader = loader();
    let error = loader
        .load("bomb", bytes, &Limits::default())
        .await
        .unwrap_err();
    assert_eq!(shape_limit(&error), Some(ShapeLimit::Functions), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("300000 functions") && message.contains("functions per component"),
        "{message}"
    );
    assert_eq!(loader.counts().compiled, 0);
}

#[tokio::test]
async fn deeply_nested_blocks_are_refused_before_compiling() {
    // 600 KB of blocks nested 200,000 deep compiled for about 65 s.
    let depth = 200_000;
    let mut body = String::with_capacity(depth * 10);
    body.push_str("(func\n");
    body.push_str(&"block\n".repeat(depth));
    body.push_str(&"end\n".repeat(depth));
    body.push(')');
    let bytes = component_of_functions([body]);
    let loader = loader();
    let error = loader
        .load("bomb", bytes, &Limits::default())
        .await
        .unwrap_err();
    assert_eq!(
        shape_limit(&error),
        Some(ShapeLimit::BlockNesting),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("function 0 of core module 0")
            && message.contains("2000 levels of block nesting per function"),
        "{message}"
    );
    assert_eq!(loader.counts().compiled, 0);
}

#[tokio::test]
async fn the_example_plugins_pass_the_shape_limits() {
    for guest in [
        guests::EMAIL_DENY_LIST,
        guests::MIGRATE_USER,
        guests::CAPTCHA_VERIFY,
        guests::ROUTING_PROBE,
    ] {
        let bytes = std::fs::read(guest).unwrap();
        let shape = triggerfish::plugin::shape::check_shape(&bytes).expect(guest);
        // Far from every limit.
        assert!(
            shape.functions * 10 < triggerfish::plugin::shape::MAX_FUNCTIONS,
            "{shape:?}"
        );
        assert!(
            shape.deepest_block_nesting * 10 < triggerfish::plugin::shape::MAX_BLOCK_NESTING,
            "{shape:?}"
        );
    }
}

/// One function of dense code that passes every shape limit but takes
/// seconds of CPU to compile (register allocation grows faster than the
/// function).
fn slow_to_compile() -> Vec<u8> {
    const LOCALS: u32 = 1_000;
    let mut function = String::from("(func (local");
    for _ in 0..LOCALS {
        function.push_str(" i32");
    }
    function.push_str(")\n");
    let mut seed: u32 = 1;
    let mut next = move || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 8) % LOCALS
    };
    // About 8 bytes of code per line, and a branch every tenth: some
    // 700 KB in all, with thousands of blocks for the register allocator.
    for line in 0..80_000 {
        let (a, b, c) = (next(), next(), next());
        writeln!(
            function,
            "local.get {a} local.get {b} i32.add local.set {c}"
        )
        .unwrap();
        if line % 10 == 0 {
            let (a, b, c) = (next(), next(), next());
            writeln!(function, "local.get {a} if local.get {b} local.set {c} end").unwrap();
        }
    }
    function.push(')');
    component_of_functions([function])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_over_its_cpu_limit_is_stopped_and_remembered() {
    let _cpu = timing_sensitive().await;
    let bytes = slow_to_compile();
    let shape = triggerfish::plugin::shape::check_shape(&bytes).expect("within the shape limits");
    assert!(shape.largest_function_body > 500_000, "{shape:?}");

    let mut compiler = SubprocessCompiler::new(env!("CARGO_BIN_EXE_triggerfish").into());
    compiler.cpu_seconds = 1;
    // Generous: on a loaded machine one second of CPU can take a while.
    compiler.wall_timeout = Duration::from_secs(120);
    let loader = PluginLoader::new(runtime(), None).with_compiler(Compiler::Subprocess(compiler));
    let error = loader
        .load("slow", bytes.clone(), &Limits::default())
        .await
        .unwrap_err();
    assert_eq!(
        error,
        PluginError::CompileLimit(CompileError::CpuTime { seconds: 1 }),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "compiling took longer than 1 s of CPU, the host's limit"
    );

    // The same bytes again: refused at once, not compiled again.
    let again = loader
        .load("slow-again", bytes, &Limits::default())
        .await
        .unwrap_err();
    assert_eq!(again, error);
    let counts = loader.counts();
    assert_eq!(counts.refused_as_remembered, 1, "{counts:?}");
    assert_eq!(counts.remembered, 1, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_over_its_memory_limit_is_stopped() {
    let _cpu = timing_sensitive().await;
    // The slow compile takes some 600 MB.
    let mut compiler = SubprocessCompiler::new(env!("CARGO_BIN_EXE_triggerfish").into());
    compiler.memory_bytes = 256 << 20;
    compiler.wall_timeout = Duration::from_secs(120);
    let loader = PluginLoader::new(runtime(), None).with_compiler(Compiler::Subprocess(compiler));
    let error = loader
        .load("greedy", slow_to_compile(), &Limits::default())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "compiling needed more than 256 MiB of memory, the host's limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_compiled_in_a_child_process_serves_and_is_cached() {
    let cache = PluginsDir::new();
    let compiler = Compiler::subprocess(env!("CARGO_BIN_EXE_triggerfish").into());
    let loader = PluginLoader::new(runtime(), Some(cache.path())).with_compiler(compiler);
    let dir = PluginsDir::new();
    dir.plugin("t", "10-deny.wasm", guests::EMAIL_DENY_LIST)
        .settings("t", "[plugins.10-deny.config]\ndomains = \"spam.test\"\n");
    let tenant = tenant_with(&loader, &dir, "t").await;
    assert!(tenant.failures.is_empty(), "{:?}", tenant.failures);
    assert_eq!(loader.counts().compiled, 1);
    let error = chain_error(&tenant, pre_sign_up("bot@spam.test")).await;
    assert_eq!(error.kind, triggerfish::dispatch::ErrorKind::Denied);

    // What the child wrote is what a restart reads back.
    let restarted = PluginLoader::new(runtime(), Some(cache.path())).with_compiler(
        Compiler::subprocess(env!("CARGO_BIN_EXE_triggerfish").into()),
    );
    let bytes = std::fs::read(guests::EMAIL_DENY_LIST).unwrap();
    let plugin = restarted
        .load("10-deny", bytes, &Limits::default())
        .await
        .unwrap();
    assert_eq!(plugin.origin, triggerfish::plugin::Origin::DiskCache);
    assert_eq!(restarted.counts().compiled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_spinning_in_its_initialisation_is_probed_once() {
    let bytes = plugin_starting_with("(loop $spin (br $spin))", 1);
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let loader = loader();
    let first = loader
        .load("spin", bytes.clone(), &limits)
        .await
        .unwrap_err();
    assert!(matches!(first, PluginError::Instantiate(_)), "{first}");
    assert_eq!(loader.counts().probed, 1);

    // Another file with the same bytes, or the same file touched: the
    // remembered error, with no probe.
    let started = std::time::Instant::now();
    let second = loader
        .load("spin-copy", bytes.clone(), &limits)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(second, first);
    let counts = loader.counts();
    assert_eq!(
        (counts.probed, counts.refused_as_remembered),
        (1, 1),
        "{counts:?}"
    );
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");

    // Under other limits the outcome may differ: probed again.
    let other = Limits {
        timeout: Duration::from_millis(200),
        ..limits
    };
    loader.load("spin", bytes, &other).await.unwrap_err();
    assert_eq!(loader.counts().probed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_plugin_is_probed_once_across_reloads_of_its_tenant() {
    let dir = PluginsDir::new();
    dir.file(
        "t",
        "10-spin.wasm",
        plugin_starting_with("(loop $spin (br $spin))", 1),
    )
    .settings("t", "[limits]\ntimeout-ms = 300\n");
    let loader = loader();
    let policy = operator();
    let policy = policy.for_tenant("t");
    let first =
        triggerfish::tenant::Tenant::load(&loader, policy, "t", &dir.tenant_dir("t"), None).await;
    assert_eq!(first.failures.len(), 1);
    // The folder is touched (a new file beside it): the spinning file is
    // not probed again.
    dir.plugin("t", "20-deny.wasm", guests::EMAIL_DENY_LIST);
    let second =
        triggerfish::tenant::Tenant::load(&loader, policy, "t", &dir.tenant_dir("t"), Some(&first))
            .await;
    assert_eq!(second.failures.len(), 1);
    assert_eq!(second.failures[0].error, first.failures[0].error);
    assert_eq!(
        loader.counts().probed,
        2,
        "the spinning one once, the deny list once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_runs_with_the_plugins_memory_limit() {
    // 1,600 pages: 100 MiB of initial memory, over the default 64 MiB.
    let bytes = plugin_starting_with("", 1_600);
    let loader = loader();
    let error = loader
        .load("big", bytes.clone(), &Limits::default())
        .await
        .unwrap_err();
    assert!(matches!(error, PluginError::Instantiate(_)), "{error}");

    // A tenant that allows 120 MiB: the probe instantiates it (and only
    // the type check, which this WAT plugin cannot pass, refuses it).
    let limits = Limits {
        memory_bytes: 120 << 20,
        ..Limits::default()
    };
    let error = loader.load("big", bytes, &limits).await.unwrap_err();
    assert!(matches!(error, PluginError::Mismatch { .. }), "{error}");
    assert_eq!(loader.counts().probed, 2);
}

#[tokio::test]
async fn a_tenant_memory_limit_reaches_the_probe() {
    let dir = PluginsDir::new();
    dir.file("t", "10-big.wasm", plugin_starting_with("", 1_600))
        .settings("t", "[limits]\nmemory-mib = 120\n");
    let tenant = tenant(&dir, "t").await;
    let failure = &tenant.failures[0];
    assert!(
        failure.error.contains("does not match the contract"),
        "{}",
        failure.error
    );
}

/// Each tenant reloads on its own: while one tenant's new plugin spins in
/// its initialisation (its probe waits out the tenant's timeout), another
/// tenant's new plugin is loaded and serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tenant_holds_up_no_other_tenants_reload() {
    // CPU-heavy: takes turns with the tests that time something.
    let _cpu = timing_sensitive().await;
    let dir = PluginsDir::new();
    dir.plugin("quick", "10-step.wasm", guests::EMAIL_DENY_LIST);
    dir.plugin("slow", "10-step.wasm", guests::EMAIL_DENY_LIST)
        .settings(
            "slow",
            "[limits]\ntimeout-ms = 4000\nfuel = 100_000_000_000_000\n",
        );
    let tenants = tenants(&dir).await;
    let quick_before = tenants.tenant("quick").unwrap().plugins[0]
        .hash()
        .to_owned();

    // New bytes in both folders: a plugin spinning in its start function
    // for the slow tenant, another build for the quick one.
    dir.file(
        "slow",
        "10-step.wasm",
        plugin_starting_with("(loop $spin (br $spin))", 1),
    );
    dir.plugin("quick", "10-step.wasm", guests::PRESIGNUP_PROBE);
    let reload = tokio::spawn({
        let tenants = tenants.clone();
        async move {
            tenants
                .reload_tenants(["slow".to_owned(), "quick".to_owned()])
                .await
        }
    });
    let mut swapped = false;
    for _ in 0..300 {
        if tenants.tenant("quick").unwrap().plugins[0].hash() != quick_before {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(swapped, "the quick tenant's new plugin never arrived");
    assert!(
        !reload.is_finished(),
        "the quick tenant was swapped in while the slow one was still loading"
    );
    reload.await.unwrap();
    let slow = tenants.tenant("slow").unwrap();
    assert!(
        slow.failures[0].error.contains("did not finish"),
        "{:?}",
        slow.failures
    );
}

/// A host that has not loaded its tenants yet says so to a load balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_starting_until_every_tenant_is_loaded() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-deny.wasm", guests::EMAIL_DENY_LIST);
    let tenants = std::sync::Arc::new(triggerfish::tenant::registry::Tenants::new(
        loader(),
        operator(),
        dir.path(),
    ));
    let server = Server::start(tenants.clone()).await;
    let health = || async {
        let answer = reqwest::get(format!("{}/healthz", server.base))
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, body) = health().await;
    assert_eq!((status, body["status"].as_str()), (503, Some("starting")));
    assert_eq!(body["reason"], "loading the tenants");
    tenants.load_all().await.unwrap();
    let (status, body) = health().await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    assert_eq!(body["tenants"], 1);
}
