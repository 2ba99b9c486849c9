//! `execops serve`, `execops demo` and `execops send`: the server, with or without the demo's
//! data, and one signed delivery posted to it.

use anyhow::Context;

use crate::app::App;
use crate::config::Config;
use crate::store::Database;

pub(super) async fn serve(
    config: Config,
    demo_fixtures: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let db = Database::open(&config.database()).await?;
    let app = App::start(db.pool.clone(), &config);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let router = app.router();
    let stopping = app.shutdown_sender();
    if let Some(metrics_addr) = config.metrics_addr {
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding EXECOPS_METRICS_ADDR {metrics_addr}"))?;
        tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
        let metrics = crate::web::metrics_router(app.state.clone());
        let limits = config.limits.clone();
        let mut stopped = app.state.shutdown.clone();
        tokio::spawn(async move {
            crate::web::serve::serve(metrics_listener, metrics, &limits, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        });
    }
    let limits = config.limits.clone();
    let server = tokio::spawn(async move {
        crate::web::serve::serve(listener, router, &limits, async move {
            shutdown_signal().await;
            // Live streams end now, so that HTTP can drain.
            let _ = stopping.send(true);
        })
        .await;
        Ok::<_, std::io::Error>(())
    });
    if let Some(fixtures) = demo_fixtures {
        let base = format!("http://{addr}");
        let password = super::demo::demo_admin(&app.state.store).await?;
        super::demo::enable_writes(&app.state.store).await?;
        let sent = super::demo::send_fixtures(&config, &fixtures, &base).await?
            + super::demo::send_recent_history(&config, &fixtures, &base, chrono::Utc::now())
                .await?;
        // One write, and a closed standard output is no reason to stop serving.
        let text = format!(
            "ExecOps demo: {sent} deliveries sent through the signed webhooks.\n\
             Open {base}/inbox and sign in as {} with password {password}\n\
             Ctrl-C stops it; the data stays in {}.\n",
            super::demo::DEMO_ADMIN,
            config.data_dir.display()
        );
        let mut out = std::io::stdout().lock();
        let _ = std::io::Write::write_all(&mut out, text.as_bytes());
        let _ = std::io::Write::flush(&mut out);
    }
    let served = server.await.context("the server task")?;
    tracing::info!("HTTP drained; stopping subscriptions");
    app.stop().await;
    db.close().await?;
    served.context("serving HTTP")
}

pub(super) async fn send(
    config: &Config,
    fixture: &std::path::Path,
    to: Option<String>,
) -> anyhow::Result<()> {
    let base = to.unwrap_or_else(|| format!("http://{}", config.addr));
    let base = base.trim_end_matches('/');
    let delivery = crate::send::prepare(fixture, config, base, chrono::Utc::now())?;
    let mut request = reqwest::Client::new().post(format!("{base}{}", delivery.path));
    for (name, value) in &delivery.headers {
        request = request.header(name, value);
    }
    let response = request
        .body(delivery.body)
        .send()
        .await
        .with_context(|| format!("posting to {base}{}", delivery.path))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{} {text}", status.as_u16());
    anyhow::ensure!(status.is_success(), "the server refused the delivery");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = interrupt => tracing::info!("interrupted; shutting down"),
        _ = terminate => tracing::info!("terminated; shutting down"),
    }
}
