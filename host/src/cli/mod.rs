//! The binary's own parts, beside `main.rs`: the command line's flags
//! ([`args`]) and the `deploy` command ([`deploy`]).

pub mod args;
pub mod deploy;
