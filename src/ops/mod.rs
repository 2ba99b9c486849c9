//! The operator's verbs over the log, run from the command line: [`audit`] tells a proposal's
//! story and verifies the hash-chained audit log, [`replay`] rebuilds or checks the read models
//! beside the live ones, and [`backtest`] replays past signals through the policies with
//! another configuration, writing nothing; [`privacy`] gathers what is held about one data
//! subject.

pub mod audit;
pub mod backtest;
pub mod privacy;
pub mod replay;
