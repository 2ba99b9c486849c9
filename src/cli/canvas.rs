//! `execops canvas`: one of the canvas's questions answered on the command line.

use super::Opened;
use crate::config::Config;

/// The question and how to answer it.
#[derive(Debug, clap::Args)]
pub(super) struct CanvasArgs {
    query: String,
    /// First day, YYYY-MM-DD (default: the first of the month three months ago).
    #[arg(long)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD (default: today).
    #[arg(long)]
    to: Option<String>,
    /// day, week or month (default).
    #[arg(long)]
    granularity: Option<String>,
    /// One vendor (spend_by_vendor).
    #[arg(long)]
    vendor: Option<String>,
    /// One currency (three letters); default every currency, each apart.
    #[arg(long)]
    currency: Option<String>,
    /// Rows a ranking keeps, 1–50 (default 10).
    #[arg(long)]
    top: Option<String>,
    /// The answer as one JSON document (the API's shape).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// The table as CSV.
    #[arg(long)]
    csv: bool,
}

pub(super) async fn run(config: Config, args: CanvasArgs) -> anyhow::Result<()> {
    let CanvasArgs {
        query,
        from,
        to,
        granularity,
        vendor,
        currency,
        top,
        json,
        csv,
    } = args;
    let raw = crate::canvas::RawParams {
        from,
        to,
        granularity,
        vendor,
        currency,
        top,
    };
    let names: Vec<&str> = crate::canvas::QueryName::ALL
        .iter()
        .map(|q| q.as_str())
        .collect();
    let name = crate::canvas::QueryName::parse(&query).ok_or_else(|| {
        anyhow::anyhow!(
            "no canvas query {query:?}; the queries are {}",
            names.join(", ")
        )
    })?;
    let params = crate::canvas::Params::parse(&raw, chrono::Utc::now().date_naive())?;
    let opened = Opened::open(&config).await?;
    let result = crate::canvas::queries::run(opened.pool(), name, &params).await;
    let answer = opened.close(result.map_err(Into::into)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if csv {
        print!("{}", answer.to_csv());
    } else {
        print!("{}", canvas_text(&answer));
    }
    Ok(())
}

/// An answer as an aligned table with its title and notes.
fn canvas_text(answer: &crate::canvas::Answer) -> String {
    let cells: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|row| row.iter().map(|c| c.display()).collect())
        .collect();
    let widths: Vec<usize> = answer
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|v| v.chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &[String]| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = format!(
        "{}\n{} to {}\n\n{}\n",
        answer.title,
        answer.params.from,
        answer.params.to,
        line(&answer.columns)
    );
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    if cells.is_empty() {
        out.push_str("(nothing recorded for this period)\n");
    }
    for note in &answer.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}
