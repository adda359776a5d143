//! topolab-core: the shared vocabulary of topolab. No async runtime, no tensors, no cluster API.
//!
//! The pieces and how they fit:
//!
//! - [`units`]: quantities with units ([`units::Time`] in integer nanoseconds, [`units::Bytes`],
//!   [`units::BitRate`], [`units::Flops`], [`units::FlopRate`]) that parse and print as
//!   `"10 Gbit/s"`, `"50 us"`, `"95 MiB"`, `"4.29 TFLOP/s"`.
//! - [`scenario`]: the user's TOML input, parsed raw ([`scenario::ScenarioFile`]) then validated
//!   ([`scenario::Scenario`]), with every problem located by [`diagnostic`] at file:line:column.
//! - [`models`]: the model zoo, built layer by layer from architecture definitions, and user
//!   layer tables (CSV).
//! - [`hardware`]: the GPU, NIC and host-bus catalogue, each figure with its source.
//! - [`placement`]: variables onto parameter-server shards (round-robin, greedy, partitioned).
//! - [`plan`]: the per-step DAG of ops that the simulator times and the runtime performs.
//! - [`step`]: the rules of a synchronous PS step (aggregation, shard readiness, the global
//!   release), as state machines both engines drive.
//! - [`collective`]: the all-reduce step: fusion buckets and the ring schedule.
//! - [`best`]: the fastest, the cheapest and the Pareto front of a sweep, in the same words everywhere.
//! - [`compare`]: two runs or two sweeps, metric by metric, against a regression threshold.
//! - [`records`]: [`records::StepRecord`] and [`records::RunSummary`], identical for simulated
//!   and measured runs, with CSV and JSON readers and writers.
//!
//! Data flows `scenario -> (model, hardware) -> placement -> plan -> run records`.
#![warn(missing_docs)]

pub mod atomic;
pub mod best;
pub mod collective;
pub mod compare;
pub mod convergence;
pub mod diagnostic;
pub mod hardware;
pub mod models;
pub mod placement;
pub mod plan;
pub mod profile;
pub mod records;
pub mod scenario;
pub mod step;
pub mod units;
