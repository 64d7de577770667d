//! Test guest: a plain WASI command. It is a valid component, but of
//! another world: it exports `wasi:cli/run`, no trigger.

fn main() {
    println!("hello from a command, not a plugin");
}
