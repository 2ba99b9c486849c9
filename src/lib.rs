//! ExecOps: an event-sourced approval engine.
//!
//! A tour, in the order a request meets the code:
//! - [`web`] serves HTTP: health, readiness and metrics now; webhooks, pages and the API as
//!   they land. Handlers turn requests into commands on the aggregates.
//! - [`domain`] is the pure core: the `Inbound` and `Proposal` aggregates with their commands,
//!   events and errors. It knows nothing of HTTP or SQL.
//! - [`store`] keeps the events in Postgres (through cqrs-es and postgres-es), reads the log
//!   back in commit-safe order, runs checkpointed subscribers, and can start an embedded
//!   Postgres when no `DATABASE_URL` is given.
//! - [`router`] turns signals into proposals; [`executor`] carries out approved proposals
//!   through the [`adapters`] behind the guardrails, and attributes outcomes to them.
//!   [`deadlines`] expires and escalates waiting proposals whenever an event or a read comes.
//! - [`notify`] tells approvers that a proposal waits: an email per proposal with signed,
//!   single-use approval links, which [`web`] turns into a decision only on a confirming POST.
//! - [`slack_approvals`] tells approvers in Slack that a high-urgency proposal waits, with
//!   Approve and Reject buttons; `web::slack` decides on their clicks through the same path
//!   as the pages and the API.
//! - [`projections`] are the read models the pages use, each rebuilt from the log by a
//!   checkpointed subscriber; [`replay`] rebuilds or checks them beside the live ones, and
//!   [`audit`] tells a proposal's story and verifies the hash-chained audit log.
//! - [`backtest`] replays past signals through the router's policies with another
//!   configuration, writing nothing, to show what a threshold change would have proposed.
//! - [`config`], [`telemetry`] and [`cli`] sit at the edge: settings from the environment,
//!   logs and metrics, and the `execops` command line; [`clock`] is the wall clock, passed in
//!   where a deadline or a limit needs it, so tests can set it.

pub mod adapters;
pub mod app;
pub mod auth;
pub mod canvas;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod deadlines;
pub mod decisions;
pub mod domain;
pub mod executor;
pub mod ingest;
pub mod notify;
pub mod ops;
pub mod projections;
pub mod router;
pub mod send;
pub mod store;
pub mod telemetry;
pub mod web;
