//! topolab-core: the shared vocabulary of topolab.
#![warn(missing_docs)]

pub mod diagnostic;
pub mod hardware;
pub mod models;
pub mod scenario;
pub mod units;
