//! `triggerfish deploy`: a plugin or `tenant.toml` sent to a running host.

use anyhow::Context;
use serde_json::Value;
use std::path::PathBuf;

/// `triggerfish deploy`: each step's outcome on stdout, a refusal on
/// stderr with exit code 1.
pub(crate) async fn deploy(
    file: Option<PathBuf>,
    name: Option<String>,
    config: Option<PathBuf>,
    delete: Option<String>,
    tenant: &str,
    url: &str,
    key: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    use triggerfish::client::DeployClient;
    let key = match key.or_else(|| std::env::var("TRIGGERFISH_DEPLOY_KEY").ok()) {
        Some(key) if !key.trim().is_empty() => key.trim().to_owned(),
        _ => anyhow::bail!("no key: pass --key or set TRIGGERFISH_DEPLOY_KEY"),
    };
    let client = DeployClient::new(url, tenant, &key)?;
    let refused = |what: &str, answer: &triggerfish::client::Answer| {
        eprintln!("error: the host refused {what}: {}", answer.error());
        Ok(std::process::ExitCode::from(1))
    };
    if let Some(name) = delete {
        let answer = client.delete_plugin(&name).await?;
        if !answer.is_success() {
            return refused(&format!("to delete {name}"), &answer);
        }
        println!("deleted {name} from {tenant}");
    }
    let warn_failures = |body: &Value| {
        for error in body["errors"].as_array().into_iter().flatten() {
            eprintln!(
                "warning: {} of {tenant} does not load: {}",
                error["plugin"].as_str().unwrap_or_default(),
                error["error"].as_str().unwrap_or_default()
            );
        }
    };
    if let Some(path) = config {
        let toml =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let answer = client.put_config(toml).await?;
        if !answer.is_success() {
            return refused(&format!("{}", path.display()), &answer);
        }
        println!("{}: live as the tenant.toml of {tenant}", path.display());
        warn_failures(&answer.body);
    }
    if let Some(path) = file {
        let name = match name {
            Some(name) => name,
            None => path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_owned)
                .with_context(|| {
                    format!("{} has no usable file name: pass --name", path.display())
                })?,
        };
        let wasm =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let answer = client.put_plugin(&name, wasm).await?;
        if !answer.is_success() {
            return refused(&format!("{}", path.display()), &answer);
        }
        let body = &answer.body;
        let triggers: Vec<&str> = body["triggers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{}: live as {} in {tenant} ({}, sha256 {}); triggers: {}",
            path.display(),
            body["plugin"].as_str().unwrap_or(&name),
            if body["replaced"] == true {
                "replaced"
            } else {
                "new"
            },
            body["hash"].as_str().unwrap_or_default(),
            triggers.join(", ")
        );
        warn_failures(body);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
