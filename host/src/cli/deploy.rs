//! `triggerfish deploy`: a plugin or `tenant.toml` sent to a running host.

use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};

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
    let key = deploy_key(key)?;
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

/// The key of `--key`, or of the environment variable.
fn deploy_key(key: Option<String>) -> anyhow::Result<String> {
    match key.or_else(|| std::env::var("TRIGGERFISH_DEPLOY_KEY").ok()) {
        Some(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
        _ => anyhow::bail!("no key: pass --key or set TRIGGERFISH_DEPLOY_KEY"),
    }
}

/// `triggerfish deploy --remove-tenant --tenant T`.
pub(crate) async fn remove_tenant(
    tenant: &str,
    url: &str,
    key: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    let client = triggerfish::client::DeployClient::new(url, tenant, &deploy_key(key)?)?;
    let answer = client.delete_tenant().await?;
    if !answer.is_success() {
        eprintln!(
            "error: the host refused to remove {tenant}: {}",
            answer.error()
        );
        return Ok(std::process::ExitCode::from(1));
    }
    println!("removed the tenant {tenant}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// `triggerfish deploy --folder DIR [--tenant T]`: each tenant folder's
/// `tenant.toml`, then its plugins in name order. Stops at the first
/// refusal (exit 1), saying what was uploaded before it.
pub(crate) async fn deploy_folder(
    dir: &Path,
    tenant: Option<&str>,
    url: &str,
    key: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    let key = deploy_key(key)?;
    let folders: Vec<(String, PathBuf)> = match tenant {
        Some(tenant) => vec![(tenant.to_owned(), dir.to_owned())],
        None => {
            let mut folders = Vec::new();
            for entry in
                std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
            {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_dir() && triggerfish::tenant::is_tenant_name(&name) {
                    folders.push((name, entry.path()));
                }
            }
            folders.sort();
            folders
        }
    };
    anyhow::ensure!(
        !folders.is_empty(),
        "{} has no tenant folders (letters, digits, - and _)",
        dir.display()
    );
    for (tenant, folder) in folders {
        let config = folder.join("tenant.toml");
        let config = config.is_file().then_some(config);
        let mut plugins: Vec<PathBuf> = std::fs::read_dir(&folder)
            .with_context(|| format!("cannot read {}", folder.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "wasm")
                    && p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        plugins.sort();
        // The tenant's settings first, then its plugins in file-name order;
        // the first refusal stops the deploy.
        let steps = config
            .map(|config| (None, Some(config)))
            .into_iter()
            .chain(plugins.into_iter().map(|plugin| (Some(plugin), None)));
        for (plugin, config) in steps {
            let code = deploy(plugin, None, config, None, &tenant, url, Some(key.clone())).await?;
            if code != std::process::ExitCode::SUCCESS {
                return Ok(code);
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
