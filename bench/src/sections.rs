//! The report: the sections in order (each in a file of its own), and
//! where it is written.

use crate::rig::command_line;
use anyhow::Context;
use std::path::PathBuf;

pub fn report(args: &[String]) -> anyhow::Result<()> {
    let mut out_path = None;
    let mut seconds = 10;
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => out_path = Some(PathBuf::from(it.next().context("--out FILE")?)),
            "--seconds" => seconds = it.next().context("--seconds N")?.parse()?,
            "--only" => {
                let names = it.next().context("--only SECTION[,SECTION]")?;
                only = Some(names.split(',').map(str::to_owned).collect());
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mut report = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench` (release build) on {}, commit {}, {} cores ({cpu}). Every comparison below was measured in the same run on the same machine; times are medians over 21 samples, with min and max.\n\n",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command_line("git", &["rev-parse", "--short", "HEAD"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    type Section = Box<dyn Fn() -> anyhow::Result<String>>;
    let sections: Vec<(&str, Section)> = vec![
        ("calls", Box::new(crate::calls::calls)),
        (
            "fairness",
            Box::new(move || crate::fairness::fairness(seconds)),
        ),
        ("reload", Box::new(|| crate::lifecycle::reload(20))),
        ("restart", Box::new(crate::lifecycle::restart)),
        ("memory", Box::new(|| crate::lifecycle::memory(1000))),
        ("http", Box::new(move || crate::http::http(seconds))),
        ("sync", Box::new(crate::sync::section)),
        ("hosts", Box::new(move || crate::hosts::hosts(seconds))),
        ("spread", Box::new(crate::spread::spread)),
        (
            "streams",
            Box::new(move || crate::streams::streams(seconds)),
        ),
    ];
    if let Some(only) = &only {
        for name in only {
            anyhow::ensure!(
                sections.iter().any(|(n, _)| n == name),
                "--only: no section {name}"
            );
        }
    }
    for (name, section) in sections {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("bench: {name}…");
        let text = section().with_context(|| format!("the {name} benchmark"))?;
        eprint!("{text}");
        report.push_str(&text);
    }
    // Some sections only are not a whole report: they replace
    // BENCHMARKS.md only when asked to (`--out`).
    match out_path.or_else(|| only.is_none().then(|| PathBuf::from("BENCHMARKS.md"))) {
        Some(path) => {
            std::fs::write(&path, &report)?;
            eprintln!("bench: wrote {}", path.display());
        }
        None => print!("{report}"),
    }
    Ok(())
}
