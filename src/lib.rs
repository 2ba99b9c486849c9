//! ExecOps: an event-sourced approval engine.
//!
//! A tour, in the order a request meets the code:
//! - [`web`] serves HTTP: webhooks, pages, the API, Slack and email-link decisions, health,
//!   readiness and metrics. Handlers turn requests into commands on the aggregates;
//!   [`ingest`] verifies and normalises each sender's deliveries ([`send`] signs them as the
//!   senders would).
//! - [`domain`] is the pure core: the `Inbound`, `Proposal`, `Guardrails` and `User`
//!   aggregates with their commands, events and errors, and the policies. It knows nothing of
//!   HTTP or SQL.
//! - [`commands`] takes the aggregates' commands and records their events; [`decisions`] is
//!   the one path every approval and rejection takes.
//! - [`store`] is generic over events: it keeps them in Postgres, reads the log back in
//!   commit-safe order, runs checkpointed subscribers, and can start an embedded Postgres when
//!   no `DATABASE_URL` is given.
//! - [`router`] turns signals into proposals; [`executor`] carries out approved proposals
//!   through the [`adapters`] behind the guardrails, and attributes outcomes to them.
//!   [`deadlines`] expires and escalates waiting proposals whenever an event or a read comes.
//! - [`notify`] tells approvers that a proposal waits: by email with signed, single-use
//!   approval links, and in Slack with Approve and Reject buttons; [`web`] turns either into
//!   a decision through [`decisions`].
//! - [`projections`] are the read models the pages use, each rebuilt from the log by a
//!   checkpointed subscriber; [`canvas`] answers the read-only metrics questions from them.
//! - [`ops`] holds the operator's verbs: replay, audit (a proposal's story, the hash-chained
//!   audit log verified) and backtest.
//! - [`config`], [`telemetry`], [`auth`] and [`cli`] sit at the edge: settings, logs and
//!   metrics, roles and secrets, and the `execops` command line; [`app`] wires the parts;
//!   [`clock`] is the wall clock, passed in where a deadline or a limit needs it, so tests
//!   can set it.

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
