//! Nothing here: the examples are in this folder's `*.rs` files, run with
//! `cargo run --release -p selfsup-examples --example NAME`.
