//! Integration tests: the real app on 127.0.0.1:0 against a real Postgres (the embedded one
//! unless DATABASE_URL names another), each test in a fresh database. One binary, so one
//! Postgres per run.

mod adapters;
pub mod api;
pub mod audit;
mod backtest;
mod browser;
mod canvas;
mod canvas_web;
mod cli;
mod common;
mod email_links;
pub mod execution;
mod fuzz;
mod limits;
mod oidc;
mod ops;
pub mod pages;
mod people;
pub mod policies;
mod projections;
mod quorum;
mod replay;
mod serve;
mod slack_approvals;
mod store;
mod subscriptions;
pub mod webhooks;
