//! `topolab check` on the example and invalid scenario sets.

use super::*;

#[test]
fn every_invalid_scenario_exits_2_with_its_expected_messages() {
    let invalid = files("scenarios/invalid", "toml");
    assert!(invalid.len() >= 20, "at least 20 malformed scenarios, found {}", invalid.len());
    for f in &invalid {
        let expected_file = f.replace(".toml", ".expected");
        assert!(exists(&expected_file), "{f} has no {expected_file}");
        let expected = std::fs::read_to_string(root().join(&expected_file)).unwrap();
        let out = topolab(&["check", f]);
        assert_eq!(out.status.code(), Some(2), "{f}: exit status");
        assert!(out.stdout.is_empty(), "{f}: nothing on stdout for an invalid scenario");
        let err = stderr(&out);
        assert!(err.contains(&format!("{f}:")), "{f}: message names file:line:col\n{err}");
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            assert!(err.contains(line.trim()), "{f}: expected `{line}` in\n{err}");
        }
    }
}

#[test]
fn all_invalid_scenarios_at_once_exit_2_and_name_each_file() {
    let invalid = files("scenarios/invalid", "toml");
    let mut args = vec!["check"];
    args.extend(invalid.iter().map(String::as_str));
    let out = topolab(&args);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{} of {} scenarios invalid", invalid.len(), invalid.len())), "{err}");
}

#[test]
fn every_example_scenario_is_valid_and_has_a_plan() {
    let mut examples = files("scenarios/examples", "toml");
    examples.extend(files("scenarios/bench", "toml"));
    examples.extend(files("scenarios/gpu", "toml"));
    assert!(examples.len() >= 5);
    for f in &examples {
        let out = topolab(&["check", f]);
        assert_eq!(out.status.code(), Some(0), "{f}: {}", stderr(&out));
        let out = topolab(&["plan", f, "--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{f}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["ops_per_step"].as_array().unwrap().len() >= 5, "{f}");
    }
    assert!(examples.iter().any(|f| f.ends_with("inception-v3-1xk40.toml")));
    assert!(examples.iter().any(|f| f.ends_with("examples/inception-v3-64w-8ps.toml")));
}

#[test]
fn printed_normalized_scenario_checks_again_with_the_same_hash() {
    let f = "scenarios/examples/inception-v3-64w-8ps.toml";
    let printed = topolab(&["check", "--print", f]);
    assert_eq!(printed.status.code(), Some(0));
    let text = stdout(&printed);
    assert!(text.contains("[topology]") && text.contains("goodput = 0.94"), "defaults written out:\n{text}");
    let dir = super::TempDir::new("norm");
    let norm = dir.join("n.toml");
    std::fs::write(&norm, &text).unwrap();
    let a = stdout(&topolab(&["check", f]));
    let b = stdout(&topolab(&["check", norm.to_str().unwrap()]));
    let hash = |s: &str| s.rsplit("hash ").next().unwrap().trim().to_string();
    assert_eq!(hash(&a), hash(&b));
}

#[test]
fn a_missing_file_is_bad_input() {
    let out = topolab(&["check", "scenarios/examples/no-such-file.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read scenario scenarios/examples/no-such-file.toml"));
}
