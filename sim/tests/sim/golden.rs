//! Golden summaries: a changed prediction is a reviewed diff (`UPDATE_GOLDEN=1` accepts it).

use super::*;

#[test]
fn example_summaries_match_the_committed_golden_files() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let examples = root().join("scenarios/examples");
    let golden = root().join("scenarios/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut changed = Vec::new();
    for f in &files {
        let s = Scenario::load(f).unwrap();
        let mut got = Vec::new();
        topolab_core::records::write_summary_json(&run(&s).summary, &mut got).unwrap();
        got.push(b'\n');
        let g = golden.join(format!("{}.summary.json", f.file_stem().unwrap().to_string_lossy()));
        if update {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&g, &got).unwrap();
            continue;
        }
        match std::fs::read(&g) {
            Ok(want) if want == got => {}
            Ok(_) => changed.push(format!("{} changed:\n{}", g.display(), String::from_utf8_lossy(&got))),
            Err(_) => changed.push(format!("{} is missing", g.display())),
        }
    }
    assert!(
        changed.is_empty(),
        "golden summaries differ (review, then rerun with UPDATE_GOLDEN=1):\n{}",
        changed.join("\n")
    );
}
