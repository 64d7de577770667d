//! Builds every guest (example plugins and test guests) for wasm32-wasip2
//! and writes their paths as constants, so tests always run the plugins as
//! they are in the tree.

use std::fmt::Write;

fn main() {
    let root = xtask::workspace_root();
    for dir in ["plugins", "tests/guests", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let guests = match xtask::build_guests() {
        Ok(guests) => guests,
        Err(e) => panic!("{e}"),
    };
    let mut out = String::new();
    for guest in guests {
        let name = guest.package.replace('-', "_").to_uppercase();
        writeln!(out, "/// `{}` built for wasm32-wasip2.", guest.package).unwrap();
        writeln!(
            out,
            "pub const {name}: &str = {:?};",
            guest.wasm.display().to_string()
        )
        .unwrap();
    }
    let path = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(path, out).unwrap();
}
