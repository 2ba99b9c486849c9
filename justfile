# ExecOps tasks. `just` alone runs the product.

default: run

# Run the product on DATABASE_URL, or on its embedded Postgres when that is unset.
run:
    cargo run --release -- serve

# Every test; the harness starts its own Postgres.
test:
    cargo test

lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Every benchmark.
bench: bench-store bench-ingest bench-web bench-execute bench-replay bench-canvas bench-load

# Append and read-back throughput of the event store (BENCH_EVENTS, BENCH_CONCURRENCY).
bench-store:
    cargo bench --bench store

# Signed Stripe deliveries against the server, beside pgbench on the same Postgres
# (BENCH_DELIVERIES, BENCH_CONCURRENCY, BENCH_DUPLICATES).
bench-ingest:
    cargo bench --bench ingest

# Page and API latency with 10,000 pending proposals (BENCH_PROPOSALS).
bench-web:
    cargo bench --bench web

# Approval to ExecutionSucceeded through a local Slack, one at a time and in a burst
# (BENCH_SEQUENTIAL, BENCH_APPROVALS).
bench-execute:
    cargo bench --bench execute

# A Postgres 15 in Docker, for those who prefer it to the embedded one.
db:
    docker compose up -d db

# What CI runs.
ci:
    bash .ci/run

# Rebuild every projection from a log of 1,000,000 realistic events: events/s and peak
# memory (BENCH_EVENTS).
bench-replay:
    cargo bench --bench replay

# Each canvas query's p50 and p90 over 1,000,000 events of history (BENCH_EVENTS, BENCH_RUNS).
bench-canvas:
    cargo bench --bench canvas

# Every parser and verifier a client reaches, fed arbitrary bytes and headers for ten
# minutes in all; prints the cases each target ran (FUZZ_SEED picks another sequence).
fuzz:
    FUZZ_SECONDS=75 cargo test --test it fuzz:: -- --nocapture --test-threads 4

# A team's day at once on one instance for 60 s: 200 open inbox streams, 20 people paging,
# approvals, 500 signed webhooks/s and 100 sign-ins/s with made-up emails (BENCH_SECONDS,
# BENCH_WEBHOOK_RATE, BENCH_SIGNIN_RATE).
bench-load:
    cargo bench --bench load
