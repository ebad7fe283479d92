//! `bench-table`: the results of `cargo bench` as one Markdown table, read from criterion's
//! files (`target/criterion/GROUP/BENCH/new/{benchmark,estimates}.json`): median time per
//! iteration and, where the bench states its throughput, items (images, pairs) per second.
//!
//! `cargo bench && cargo run --release -p selfsup-benches --bin bench-table [CRITERION_DIR]`

use std::path::{Path, PathBuf};

/// One benchmark's summary.
struct Row {
    id: String,
    median_ns: f64,
    items: Option<f64>,
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Every `new/` folder under `dir` (criterion nests benches up to three levels deep).
fn find_new(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                out.push(p);
            } else if p.file_name().is_none_or(|n| n != "report") {
                find_new(&p, out);
            }
        }
    }
}

fn rows(dir: &Path) -> Vec<Row> {
    let mut dirs = Vec::new();
    find_new(dir, &mut dirs);
    let mut rows: Vec<Row> = dirs
        .iter()
        .filter_map(|d| {
            let bench = read_json(&d.join("benchmark.json"))?;
            let est = read_json(&d.join("estimates.json"))?;
            let median_ns = est["median"]["point_estimate"].as_f64()?;
            let t = &bench["throughput"];
            let items = t["Elements"].as_f64().or_else(|| t["Bytes"].as_f64());
            Some(Row {
                id: bench["full_id"].as_str()?.to_string(),
                median_ns,
                items,
            })
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

fn time(ns: f64) -> String {
    match ns {
        x if x >= 1e9 => format!("{:.2} s", x / 1e9),
        x if x >= 1e6 => format!("{:.1} ms", x / 1e6),
        x if x >= 1e3 => format!("{:.1} µs", x / 1e3),
        x => format!("{x:.0} ns"),
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("criterion")
        });
    let rows = rows(&dir);
    if rows.is_empty() {
        eprintln!(
            "no criterion results under {}: run `cargo bench` first",
            dir.display()
        );
        std::process::exit(1);
    }
    println!("| benchmark | median per iteration | items per second |");
    println!("|---|---:|---:|");
    for r in rows {
        let rate = r.items.map_or("-".to_string(), |n| {
            format!("{:.0}", n / (r.median_ns / 1e9))
        });
        println!("| {} | {} | {rate} |", r.id, time(r.median_ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_folders() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("loss/nt_xent/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"full_id":"loss/nt_xent","throughput":{"Elements":256}}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"median":{"point_estimate":2000000.0}}"#,
        )
        .unwrap();
        let r = rows(dir.path());
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].id.as_str(), r[0].items),
            ("loss/nt_xent", Some(256.0))
        );
        assert_eq!(time(r[0].median_ns), "2.0 ms");
    }
}
