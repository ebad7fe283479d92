//! Every input in `fuzz/corpus/` (what the fuzzers kept, and the inputs of every finding
//! fixed) goes through its entry point again: a fixed finding stays fixed without libFuzzer.

use std::path::PathBuf;

#[test]
fn every_corpus_input_is_handled() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, run) in selfsup_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "{}: a corpus of {} inputs",
            dir.display(),
            files.len()
        );
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", f.display());
        }
    }
}
