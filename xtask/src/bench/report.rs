//! The report: the machine and one row per run, as a table and as JSON. What the numbers
//! should be is in docs/bench.md, not here.

use std::fmt::Write as _;

use procfs::Current as _;
use serde::Serialize;

/// Everything one `cargo xtask bench` measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Where it ran.
    pub(crate) machine: Machine,
    /// The command line that produced it.
    pub(crate) command: String,
    /// Concurrent keep-alive connections.
    pub(crate) connections: usize,
    /// Measured seconds per run.
    pub(crate) seconds: f64,
    /// Warm-up seconds per run, not measured.
    pub(crate) warmup_seconds: f64,
    /// One entry per run, in the order they ran.
    pub(crate) runs: Vec<Run>,
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    /// Logical CPUs available.
    pub(crate) cpus: usize,
    /// The CPU's model name from `/proc/cpuinfo`.
    pub(crate) cpu_model: String,
    /// Total memory from `/proc/meminfo`, in MiB.
    pub(crate) memory_mib: u64,
    /// The one-minute load average before the first run.
    pub(crate) load_before: f64,
    /// The one-minute load average after the last run.
    pub(crate) load_after: f64,
}

/// One server under load.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Run {
    /// Short name: `baseline`, `durable`, `postgres-3`, … (docs/bench.md lists them).
    pub(crate) name: String,
    /// What ran, for people.
    pub(crate) server: String,
    /// Events in each delivery.
    pub(crate) events_per_delivery: usize,
    /// Measured requests answered 200.
    pub(crate) requests: u64,
    /// Measured requests per second.
    pub(crate) requests_per_second: f64,
    /// Median latency, ms.
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub(crate) p99_ms: Option<f64>,
    /// Slowest request, ms.
    pub(crate) max_ms: Option<f64>,
    /// Resident memory right after start-up, before any request, KiB (with replicas, their
    /// sum).
    pub(crate) idle_rss_kib: u64,
    /// Peak resident memory (`VmHWM`) at the end of the run, KiB (with replicas, the sum of
    /// each one's peak).
    pub(crate) peak_rss_kib: u64,
    /// Requests per second as a fraction of the baseline's in the same invocation.
    pub(crate) ratio_to_baseline: Option<f64>,
    /// Requests per second as a fraction of the `durable` (SQLite) run's in the same
    /// invocation.
    pub(crate) ratio_to_durable: Option<f64>,
    /// Answers other than 200 (warm-up included).
    pub(crate) non_200: u64,
    /// Failed connections.
    pub(crate) transport_errors: u64,
    /// The first failure, if any.
    pub(crate) first_error: Option<String>,
    /// What `serve` counted itself, read from its `/metrics` once its backlog drained.
    pub(crate) serve_metrics: Option<ServeMetrics>,
    /// How fast `serve`'s handler went through what it took; `None` for the baseline.
    pub(crate) processing: Option<Processing>,
}

/// Deliveries handled from the start of the load until the backlog was empty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Processing {
    /// Seconds from the start of the load (warm-up included) until the backlog was empty or
    /// the drain timed out.
    pub(crate) seconds: f64,
    /// Handler successes per second over those seconds.
    pub(crate) per_second: f64,
    /// Whether the backlog was empty at the end; false when the drain timed out.
    pub(crate) drained: bool,
}

/// `serve`'s own counters at the end of a run (warm-up included); with replicas, added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct ServeMetrics {
    /// Deliveries stored for the first time.
    pub(crate) accepted: u64,
    /// Inbox transactions committed (one disk sync each with the durable inbox).
    pub(crate) inbox_commits: u64,
    /// Handler calls that succeeded.
    pub(crate) handled: u64,
    /// Deliveries still waiting for the handler.
    pub(crate) backlog: u64,
}

impl ServeMetrics {
    /// Adds another replica's counters; the backlog is the shared store's, so it stays.
    pub(crate) fn add_counters(&mut self, other: ServeMetrics) {
        self.accepted += other.accepted;
        self.inbox_commits += other.inbox_commits;
        self.handled += other.handled;
    }
}

impl Run {
    /// Whether every answer was 200 and no connection failed.
    pub(crate) fn is_clean(&self) -> bool {
        self.non_200 == 0 && self.transport_errors == 0
    }

    /// Deliveries processed per second as a fraction of the requests taken per second.
    pub(crate) fn processing_ratio(&self) -> Option<f64> {
        let processing = self.processing?;
        (self.requests_per_second > 0.0).then(|| processing.per_second / self.requests_per_second)
    }
}

/// Reads the counters the table needs from `serve`'s OpenMetrics text; `None` when the text
/// has no accepted-deliveries counter.
pub(crate) fn parse_metrics(text: &str) -> Option<ServeMetrics> {
    let value = |name: &str| {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (metric, value) = line.split_once(' ')?;
                (metric == name).then(|| value.trim().parse::<f64>().ok())?
            })
            .map(|value| value as u64)
    };
    Some(ServeMetrics {
        accepted: value("preservica_webhook_deliveries_accepted_total")?,
        inbox_commits: value("preservica_webhook_inbox_commits_total").unwrap_or(0),
        handled: value("preservica_webhook_handler_successes_total").unwrap_or(0),
        backlog: value("preservica_webhook_inbox_depth").unwrap_or(0),
    })
}

/// What `serve` said about its inbox and handler, one line per run that has its metrics.
pub(crate) fn inside_lines(runs: &[Run]) -> String {
    runs.iter()
        .filter_map(|run| {
            let metrics = run.serve_metrics?;
            let per_commit = if metrics.inbox_commits == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.1}",
                    metrics.accepted as f64 / metrics.inbox_commits as f64
                )
            };
            Some(format!(
                "{}: {} stored in {} commits ({per_commit} per commit); handler done {}, \
                 waiting {}\n",
                run.name, metrics.accepted, metrics.inbox_commits, metrics.handled, metrics.backlog
            ))
        })
        .collect()
}

/// Fills in each run's ratio to the `baseline` and to the `durable` run, where they ran.
pub(crate) fn set_ratios(runs: &mut [Run]) {
    let rate = |name: &str| {
        runs.iter()
            .find(|run| run.name == name)
            .map(|run| run.requests_per_second)
            .filter(|rps| *rps > 0.0)
    };
    let (baseline, durable) = (rate("baseline"), rate("durable"));
    for run in runs {
        run.ratio_to_baseline = baseline.map(|baseline| run.requests_per_second / baseline);
        run.ratio_to_durable = durable.map(|durable| run.requests_per_second / durable);
    }
}

/// The table of runs, as printed and as pasted into the README.
pub(crate) fn table(runs: &[Run]) -> String {
    let header = [
        "run",
        "server",
        "req/s",
        "p50",
        "p99",
        "max",
        "idle RSS",
        "peak RSS",
        "vs baseline",
        "vs durable",
        "processed/s",
        "vs intake",
        "failures",
    ];
    let rows: Vec<[String; 13]> = runs
        .iter()
        .map(|run| {
            [
                run.name.clone(),
                run.server.clone(),
                format!("{:.0}", run.requests_per_second),
                ms(run.p50_ms),
                ms(run.p99_ms),
                ms(run.max_ms),
                mib(run.idle_rss_kib),
                mib(run.peak_rss_kib),
                ratio(run.ratio_to_baseline),
                ratio(run.ratio_to_durable),
                run.processing.map_or_else(
                    || "-".to_owned(),
                    |it| {
                        let timed_out = if it.drained { "" } else { " (not drained)" };
                        format!("{:.0}{timed_out}", it.per_second)
                    },
                ),
                ratio(run.processing_ratio()),
                (run.non_200 + run.transport_errors).to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::from("|");
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            // Names left-aligned, numbers right-aligned.
            if index < 2 {
                let _ = write!(text, " {cell:<width$} |");
            } else {
                let _ = write!(text, " {cell:>width$} |");
            }
        }
        out.push_str(&text);
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    line(
        &widths
            .iter()
            .enumerate()
            .map(|(index, width)| {
                if index < 2 {
                    "-".repeat(*width)
                } else {
                    format!("{}:", "-".repeat(width - 1))
                }
            })
            .collect::<Vec<_>>(),
    );
    for row in &rows {
        line(row);
    }
    out
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms"))
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Reads the machine's CPU count, CPU model, memory and load.
pub(crate) fn machine() -> Machine {
    let cpuinfo = procfs::CpuInfo::current().ok();
    let cpu_model = cpuinfo.as_ref().and_then(|it| it.model_name(0));
    let memory = procfs::Meminfo::current().map_or(0, |it| it.mem_total);
    let load = load_average();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        cpu_model: cpu_model.unwrap_or("unknown").to_owned(),
        memory_mib: memory / (1024 * 1024),
        load_before: load,
        load_after: load,
    }
}

/// The one-minute load average, 0 when unknown.
pub(crate) fn load_average() -> f64 {
    // procfs gives it as an f32; /proc/loadavg has two decimals, so the JSON shows those.
    procfs::LoadAverage::current().map_or(0.0, |it| (f64::from(it.one) * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, rps: f64, p99: f64, idle_kib: u64) -> Run {
        Run {
            name: name.to_owned(),
            server: format!("{name} server"),
            events_per_delivery: 1,
            requests: (rps * 10.0) as u64,
            requests_per_second: rps,
            p50_ms: Some(p99 / 4.0),
            p99_ms: Some(p99),
            max_ms: Some(p99 * 2.0),
            idle_rss_kib: idle_kib,
            peak_rss_kib: idle_kib * 2,
            ratio_to_baseline: None,
            ratio_to_durable: None,
            non_200: 0,
            transport_errors: 0,
            first_error: None,
            serve_metrics: None,
            processing: (name != "baseline").then_some(Processing {
                seconds: 12.0,
                per_second: rps * 0.5,
                drained: name != "durable-10",
            }),
        }
    }

    #[test]
    fn reads_this_machine() {
        let machine = machine();
        assert!(machine.cpus >= 1);
        assert_ne!(machine.cpu_model, "");
        // In MiB, not kB or bytes: any machine that builds this workspace has more than 256.
        assert!(machine.memory_mib > 256, "{machine:?}");
        assert!(machine.memory_mib < 1 << 30, "{machine:?}");
        assert!(machine.load_before >= 0.0);
        let hundredths = machine.load_before * 100.0;
        assert!(
            (hundredths - hundredths.round()).abs() < 1e-6,
            "{machine:?}"
        );
    }

    #[test]
    fn reads_serve_counters_from_openmetrics() {
        let text = "\
# HELP preservica_webhook_deliveries_accepted Verified deliveries stored
# TYPE preservica_webhook_deliveries_accepted counter
preservica_webhook_deliveries_accepted_total 1200
preservica_webhook_inbox_commits_total 40
preservica_webhook_handler_successes_total 300
preservica_webhook_requests_rejected_total{reason=\"bad_signature\"} 2
preservica_webhook_inbox_depth 900
# EOF
";
        let metrics = parse_metrics(text).expect("has the counters");
        assert_eq!(
            metrics,
            ServeMetrics {
                accepted: 1200,
                inbox_commits: 40,
                handled: 300,
                backlog: 900
            }
        );
        let mut with = run("durable", 3_000.0, 30.0, 9_000);
        with.serve_metrics = Some(metrics);
        assert_eq!(
            inside_lines(&[with, run("baseline", 1.0, 1.0, 1)]),
            "durable: 1200 stored in 40 commits (30.0 per commit); handler done 300, waiting 900\n"
        );
        assert_eq!(parse_metrics("ok\n"), None);
    }

    #[test]
    fn adds_up_replica_counters_but_not_the_shared_backlog() {
        let mut total = ServeMetrics {
            accepted: 10,
            inbox_commits: 2,
            handled: 7,
            backlog: 3,
        };
        total.add_counters(ServeMetrics {
            accepted: 5,
            inbox_commits: 1,
            handled: 8,
            backlog: 4,
        });
        let expected = ServeMetrics {
            accepted: 15,
            inbox_commits: 3,
            handled: 15,
            backlog: 3,
        };
        assert_eq!(total, expected);
    }

    #[test]
    fn renders_a_markdown_table() {
        let mut runs = vec![
            run("baseline", 20_000.0, 5.0, 3_000),
            run("durable", 3_000.0, 30.0, 21_000),
            run("postgres-3", 2_000.0, 40.0, 30_000),
        ];
        set_ratios(&mut runs);
        let expected = "\
| run        | server            | req/s |      p50 |      p99 |      max | idle RSS | peak RSS | vs baseline | vs durable | processed/s | vs intake | failures |
| ---------- | ----------------- | ----: | -------: | -------: | -------: | -------: | -------: | ----------: | ---------: | ----------: | --------: | -------: |
| baseline   | baseline server   | 20000 |  1.25 ms |  5.00 ms | 10.00 ms |  2.9 MiB |  5.9 MiB |        1.00 |       6.67 |           - |         - |        0 |
| durable    | durable server    |  3000 |  7.50 ms | 30.00 ms | 60.00 ms | 20.5 MiB | 41.0 MiB |        0.15 |       1.00 |        1500 |      0.50 |        0 |
| postgres-3 | postgres-3 server |  2000 | 10.00 ms | 40.00 ms | 80.00 ms | 29.3 MiB | 58.6 MiB |        0.10 |       0.67 |        1000 |      0.50 |        0 |
";
        assert_eq!(table(&runs), expected);
    }
}
