//! `sqlx::migrate!` embeds `sql/` at compile time, but on stable Rust it cannot tell Cargo to
//! watch that directory: without this, a new migration file is not picked up by an incremental
//! build, and the binaries run without it.
fn main() {
    println!("cargo:rerun-if-changed=sql");
}
