//! Benchmark support: shared fixtures for the criterion benches.
