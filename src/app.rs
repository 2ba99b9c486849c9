//! Assembles a running ExecOps on a database: the store, the metrics, the subscriptions and
//! the HTTP router. `execops serve` and the integration tests build it the same way.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::adapters::llm::Wording;
use crate::adapters::Adapters;
use crate::clock::Clock;
use crate::commands::Store;
use crate::config::Config;
use crate::deadlines::Deadlines;
use crate::executor::outcomes::Outcomes;
use crate::executor::{ExecutionQueue, Executor};
use crate::notify::email::EmailApprovals;
use crate::notify::slack::SlackApprovals;
use crate::projections::{AuditLog, Canvas, EventCounts, Proposals, Users};
use crate::router::Router;
use crate::store::notifications::Notifications;
use crate::store::subscription::{Registry, Runner, RunnerOptions};
use crate::telemetry::Metrics;
use crate::web::{self, AppState};

pub struct App {
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl App {
    /// Starts the subscriptions on `pool`; call [`App::stop`] to end them.
    pub fn start(pool: PgPool, config: &Config) -> Self {
        Self::start_with_clock(pool, config, Clock::system())
    }

    /// [`App::start`] with the clock that deadlines, sessions, links and limits read.
    pub fn start_with_clock(pool: PgPool, config: &Config, clock: Clock) -> Self {
        let metrics = Metrics::new();
        let subscriptions = Registry::default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (enabled, disabled) = config.webhooks.summary();
        tracing::info!(
            ?enabled,
            ?disabled,
            "webhook sources (a disabled one has no secret set)"
        );
        if config.webhooks.hubspot.is_some() && config.public_url.is_none() {
            tracing::warn!(
                "HubSpot webhooks are disabled: HubSpot signs the full URL it called, so \
                 EXECOPS_PUBLIC_URL must say what that URL is"
            );
        }
        let mut tasks = JoinSet::new();
        // Requests use `pool`; everything that runs in the background (subscriptions, the
        // executor, their commands) uses a pool of its own and one shared listener, so that
        // neither can starve the other (docs/scaling.md, "Connections").
        let background = PgPoolOptions::new()
            .max_connections(config.limits.db_background_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        let notifications = Notifications::start(pool.connect_options().as_ref().clone());
        let store = Store::new(pool.clone(), metrics.clone());
        let worker_store = Store::new(background.clone(), metrics.clone());
        let pool = background;
        let router = Router::new(
            worker_store.clone(),
            config.policies.clone(),
            config.precision.clone(),
            config.llm.clone().map(Wording::new),
        )
        .with_approvals(config.approvals.clone())
        .with_clock(clock);
        let options = RunnerOptions::default();
        tasks.spawn(
            Runner::new(pool.clone(), EventCounts, options.clone(), &subscriptions)
                .with_notifications(notifications.clone())
                .run(shutdown_rx.clone()),
        );
        tasks.spawn(
            Runner::new(pool.clone(), Proposals, options.clone(), &subscriptions)
                .with_notifications(notifications.clone())
                .run(shutdown_rx.clone()),
        );
        tasks.spawn(
            Runner::new(pool.clone(), Users, options.clone(), &subscriptions)
                .with_notifications(notifications.clone())
                .run(shutdown_rx.clone()),
        );
        tasks.spawn(
            Runner::new(pool.clone(), AuditLog, options.clone(), &subscriptions)
                .with_notifications(notifications.clone())
                .run(shutdown_rx.clone()),
        );
        tasks.spawn(
            Runner::new(pool.clone(), Canvas, options.clone(), &subscriptions)
                .with_notifications(notifications.clone())
                .run(shutdown_rx.clone()),
        );
        // With a language model, the router words each signal's proposals before its
        // transaction writes; one signal a transaction keeps that wait out of every
        // transaction.
        let router_options = RunnerOptions {
            batch_size: if config.llm.is_some() {
                1
            } else {
                options.batch_size
            },
            ..options
        };
        tasks.spawn(
            Runner::new(pool.clone(), router, router_options, &subscriptions)
                .with_notifications(notifications.clone())
                .run(shutdown_rx.clone()),
        );
        tasks.spawn(
            Runner::new(
                pool.clone(),
                ExecutionQueue,
                options.clone(),
                &subscriptions,
            )
            .with_notifications(notifications.clone())
            .run(shutdown_rx.clone()),
        );
        tasks.spawn(
            Runner::new(
                pool.clone(),
                Outcomes::new(worker_store.clone()),
                options.clone(),
                &subscriptions,
            )
            .with_notifications(notifications.clone())
            .run(shutdown_rx.clone()),
        );
        tasks.spawn(
            Runner::new(
                pool.clone(),
                Deadlines::new(worker_store.clone(), clock),
                options.clone(),
                &subscriptions,
            )
            .with_notifications(notifications.clone())
            .run(shutdown_rx.clone()),
        );
        match EmailApprovals::new(pool.clone(), config, clock) {
            Ok(Some(notifier)) => {
                tasks.spawn(
                    Runner::new(pool.clone(), notifier, options.clone(), &subscriptions)
                        .with_notifications(notifications.clone())
                        .run(shutdown_rx.clone()),
                );
            }
            Ok(None) => tracing::info!("approval emails are off: SMTP_URL is not set"),
            Err(problem) => tracing::error!(%problem, "approval emails are off"),
        }
        if let Some(warning) = config.slack_workspace_warning() {
            tracing::warn!("{warning}");
        }
        let adapters = Adapters::new(&config.adapters);
        if adapters.slack.configured() {
            // One event a transaction: its posts happen before the checkpoint commits, so a
            // retry after a failure repeats as few of them as possible.
            tasks.spawn(
                Runner::new(
                    pool.clone(),
                    SlackApprovals::new(
                        adapters.slack.clone(),
                        config.slack_approvals_channel.clone(),
                        Some(config.public_base()),
                    ),
                    RunnerOptions {
                        batch_size: 1,
                        ..options.clone()
                    },
                    &subscriptions,
                )
                .with_notifications(notifications.clone())
                .run(shutdown_rx.clone()),
            );
        }
        tasks.spawn(
            Executor::new(
                worker_store.clone(),
                adapters.clone(),
                config.execution.clone(),
                metrics.clone(),
            )
            .with_notifications(notifications.clone())
            .run(shutdown_rx.clone()),
        );
        Self {
            state: AppState {
                store,
                adapters,
                subscriptions,
                metrics,
                config: std::sync::Arc::new(config.clone()),
                clock,
                live: crate::web::live::LiveStreams::new(notifications, &config.limits),
                signin: crate::web::signin::SignInGate::new(&config.limits),
                oidc: config.oidc.clone().map(crate::web::oidc::Oidc::new),
                shutdown: shutdown_rx,
            },
            shutdown,
            tasks,
        }
    }

    /// A handle that starts the shutdown: streams end, subscriptions finish their batch.
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    pub fn router(&self) -> axum::Router {
        web::router(self.state.clone())
    }

    /// Asks every subscription to finish its batch and release its lock, and waits for them.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
