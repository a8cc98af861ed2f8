//! Placeholder replaced by the benchmark's limit server.
fn main() {}
