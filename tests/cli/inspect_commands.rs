//! models, placement, plan, run, schema, hardware and help.

use super::*;

#[test]
fn models_csv_lists_all_nine_with_published_totals() {
    let out = topolab(&["models", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(0));
    let mut r = csv::Reader::from_reader(out.stdout.as_slice());
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 9);
    // (name, published params, published G MACs)
    let published = [
        ("inception-v3", 23.8e6, Some(5.7)),
        ("resnet-50", 25.56e6, Some(4.09)),
        ("resnet-101", 44.7e6, None),
        ("resnet-152", 60.4e6, None),
        ("vgg-16", 138.36e6, Some(15.47)),
        ("alexnet", 61.1e6, Some(0.714)),
        ("bert-base", 110e6, None),
        ("bert-large", 340e6, None),
        ("gpt-2", 1542e6, None),
    ];
    for (name, params, gmacs) in published {
        let row = rows.iter().find(|r| &r[0] == name).unwrap_or_else(|| panic!("{name} listed"));
        let p: f64 = row[1].parse().unwrap();
        assert!((p - params).abs() / params <= 0.02, "{name}: {p} params");
        if let Some(g) = gmacs {
            let m: f64 = row[3].parse().unwrap();
            assert!((m - g).abs() / g <= 0.02, "{name}: {m} G MACs");
        }
        // What a GPU executes in FP32: 3x3 stride-1 convolutions by Winograd, 4x fewer; the
        // transformers have none.
        let (m, gpu): (f64, f64) = (row[3].parse().unwrap(), row[4].parse().unwrap());
        match name {
            "vgg-16" => assert!(gpu / m > 0.25 && gpu / m < 0.27, "{name}: {gpu} of {m}"),
            "bert-base" | "bert-large" | "gpt-2" => assert_eq!(gpu, m, "{name}"),
            _ => assert!(gpu < 0.9 * m, "{name}: {gpu} of {m}"),
        }
    }
}

#[test]
fn layer_table_export_reads_back_as_a_user_model() {
    let out = topolab(&["models", "inception-v3", "--layers", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(0));
    let back = topolab_core::models::read_layer_table_from(out.stdout.as_slice(), "stdout").unwrap();
    let builtin = topolab_core::models::builtin("inception-v3").unwrap();
    assert_eq!(back.layers, builtin.layers);
    assert_eq!(back.variable_count(), 190);
}

#[test]
fn unknown_model_is_bad_input_with_the_list() {
    let out = topolab(&["models", "resnet-51"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("built-in models: inception-v3"));
}

#[test]
fn placement_shows_round_robin_hot_and_greedy_balanced_for_inception_on_8_ps() {
    let f = "scenarios/examples/inception-v3-64w-8ps.toml";
    let out = topolab(&["placement", f, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let imb = |k: &str| {
        v["strategies"].as_array().unwrap().iter().find(|s| s["kind"] == k).unwrap()["imbalance"].as_f64().unwrap()
    };
    // Round-robin alternates conv weights and BN betas over 8 shards: odd shards hold only
    // betas (kilobytes) and the even ones everything else, so max/mean is far above 2.
    assert!(imb("round-robin") > 2.0, "round-robin {}", imb("round-robin"));
    assert!(imb("greedy") < 1.05, "greedy {}", imb("greedy"));
    let text = stdout(&topolab(&["placement", f]));
    assert!(
        text.contains("round-robin*_bytes") && text.contains("greedy_bytes") && text.contains("max/mean"),
        "{text}"
    );
}

#[test]
fn plan_json_bytes_match_the_model_for_one_worker() {
    let out = topolab(&["plan", "scenarios/examples/inception-v3-1xk40.toml", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = topolab_core::models::builtin("inception-v3").unwrap().bytes().0;
    // One worker, one dedicated PS: the worker pushes every gradient and pulls every
    // variable once per step, so both directions carry exactly the model's bytes.
    let w0 = &v["hosts"][0];
    assert_eq!(w0["host"], "worker0");
    assert_eq!(w0["egress_bytes"].as_u64().unwrap(), bytes);
    assert_eq!(w0["ingress_bytes"].as_u64().unwrap(), bytes);
}

#[test]
fn run_without_argument_uses_the_built_in_default() {
    let out = topolab(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("<built-in default>") && text.contains("inception-v3") && text.contains("k40"), "{text}");
    assert!(text.contains("time_to_target") && text.contains("bottleneck") && text.contains("Assumptions:"), "{text}");
}

/// The README's first command is `cargo run --release`: no subcommand at all runs the main job.
#[test]
fn no_command_at_all_runs_the_default_table() {
    let bare = topolab(&[]);
    assert_eq!(bare.status.code(), Some(0), "{}", stderr(&bare));
    // Everything but the wall time of the simulation is the same.
    let table = |o: &std::process::Output| stdout(o).split("Simulated ").next().unwrap().to_string();
    assert!(table(&bare).contains("time_to_target"), "{}", stdout(&bare));
    assert_eq!(table(&bare), table(&topolab(&["run"])));
}

/// A reader that closes the pipe early (`topolab schema | head -1`) is no error.
#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_topolab"))
        .arg("schema")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is dropped here: the rest of the schema meets a closed pipe.
    let out = child.wait_with_output().unwrap();
    assert_eq!(first[0], b'{');
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn schema_is_json_describing_the_scenario_tables() {
    let out = topolab(&["schema"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["batch", "model", "topology", "network", "sweep", "runtime"] {
        assert!(v["properties"].get(field).is_some(), "schema has {field}");
    }
    assert!(v["required"].as_array().unwrap().iter().any(|r| r == "batch"));
}

#[test]
fn every_subcommand_help_shows_an_example() {
    let top = stdout(&topolab(&["--help"]));
    assert!(top.contains("Examples:"));
    for sub in [
        "run",
        "sweep",
        "report",
        "replay",
        "calibrate",
        "validate",
        "check",
        "schema",
        "models",
        "hardware",
        "placement",
        "plan",
        "scenarios",
    ] {
        let out = topolab(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        assert!(text.contains("Examples:") && text.contains(&format!("topolab {sub}")), "{sub} --help:\n{text}");
    }
}

#[test]
fn hardware_lists_every_figure_with_a_source() {
    let out = topolab(&["hardware", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for group in ["gpus", "nics", "host_buses"] {
        for item in v[group].as_array().unwrap() {
            assert!(!item["source"].as_str().unwrap().is_empty(), "{group}: {item}");
        }
    }
    assert_eq!(v["gpus"].as_array().unwrap().len(), 8);
}

#[test]
fn run_json_of_the_bench_scenario_has_the_documented_fields() {
    let out = topolab(&["run", "scenarios/bench/inception-v3-64w-8ps.toml", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["mean", "p50", "p90", "p99"] {
        assert!(v["step_time_s"][k].as_f64().unwrap() > 0.0, "step_time_s.{k}");
    }
    for k in ["gpu", "ps_nic_in_max", "ps_nic_out_max", "worker_nic_in_max", "worker_nic_out_max"] {
        let u = v["utilization"][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&u), "utilization.{k} = {u}");
    }
    for k in ["compute", "exposed_comm", "wait"] {
        assert!(v["breakdown_s"][k].is_f64(), "breakdown_s.{k}");
    }
    assert!(v["throughput_samples_per_s"].as_f64().unwrap() > 0.0);
    assert!(!v["bottleneck"].as_str().unwrap().is_empty());
    assert_eq!(v["scenario_hash"].as_str().unwrap().len(), 16);
    assert!(v["seed"].is_u64() && v["events"].as_u64().unwrap() > 0);
    assert!(v["sim_wall_s"].as_f64().unwrap() > 0.0);
    // Communication is not fully hidden: the median step is longer than its compute.
    let compute = v["detail"]["compute_per_step_s"].as_f64().unwrap();
    assert!(v["step_time_s"]["p50"].as_f64().unwrap() > compute, "p50 must exceed the compute time {compute}");
}

#[test]
fn run_out_writes_the_three_files_and_refuses_an_oversized_model() {
    let dir = super::TempDir::new("run-out");
    let out = topolab(&["run", "scenarios/examples/tiny-mlp-custom-gpu.toml", "--out", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for f in ["summary.json", "steps.csv", "trace.json"] {
        assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 0, "{f}");
    }
    let scratch = super::TempDir::new("gpt2");
    let bad = scratch.join("gpt2.toml");
    std::fs::write(&bad, "batch = 64\n[model]\nname = \"gpt-2\"\n").unwrap();
    let out = topolab(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("needs") && stderr(&out).contains("lower `batch`"), "{}", stderr(&out));
}

#[test]
fn default_run_json_has_one_row_per_cluster_and_the_half_year_baseline() {
    let out = topolab(&["run", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.len() >= 4);
    for r in rows {
        for k in [
            "gpu",
            "workers",
            "ps",
            "throughput_samples_per_s",
            "time_to_target_s",
            "steps",
            "gpu_hours",
            "cost",
            "bottleneck",
        ] {
            assert!(!r[k].is_null(), "row lacks {k}: {r}");
        }
    }
    let one = rows.iter().find(|r| r["workers"] == 1).unwrap();
    let days = one["time_to_target_s"].as_f64().unwrap() / 86400.0;
    assert!((150.0..=185.0).contains(&days), "one K40: {days} days");
    // More workers finish sooner, with parameter servers and with a ring all-reduce.
    for kind in ["parameter-server", "all-reduce"] {
        let t: Vec<f64> =
            rows.iter().filter(|r| r["kind"] == kind).map(|r| r["time_to_target_s"].as_f64().unwrap()).collect();
        assert!(t.len() >= 4 && t.windows(2).all(|w| w[1] < w[0]), "{kind}: {t:?}");
    }
    // Each ring stands next to the PS cluster of the same workers, and one line says which
    // wins and why.
    for ring in rows.iter().filter(|r| r["kind"] == "all-reduce") {
        assert_eq!(ring["ps"], 0);
        assert!(rows.iter().any(|r| r["kind"] == "parameter-server" && r["workers"] == ring["workers"]), "{ring}");
    }
    let versus = v["ps_vs_all_reduce"].as_array().unwrap();
    assert_eq!(versus.len(), 4, "{versus:?}");
    assert!(versus.iter().all(|l| l.as_str().unwrap().contains(" wins, ")), "{versus:?}");
    assert!(v["sim_wall_s"].as_f64().unwrap() > 0.0);
    assert!(!v["assumptions"].as_array().unwrap().is_empty());
}

#[test]
fn sweep_writes_one_csv_row_per_point_and_names_the_best() {
    let dir = super::TempDir::new("sweep");
    let out = topolab(&[
        "sweep",
        "scenarios/examples/inception-v3-sweep.toml",
        "--out",
        dir.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Best by time:") && text.contains("Best by cost:") && text.contains("Pareto front"),
        "{text}"
    );
    let mut r = csv::Reader::from_path(dir.join("sweep.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    for col in ["workers", "ps", "nic", "gpu", "mode", "step_time_s.p50", "time_to_target_s", "cost"] {
        assert!(headers.iter().any(|h| h == col), "sweep.csv lacks {col}");
    }
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    // workers [8, 16, 32, 64] x ps [1, 2, 4, 8] = 16 points.
    assert_eq!(rows.len(), 16);
    let pairs: std::collections::BTreeSet<(String, String)> =
        rows.iter().map(|r| (r[0].to_string(), r[1].to_string())).collect();
    assert_eq!(pairs.len(), 16, "every point once");
}

#[test]
fn sweep_without_a_sweep_table_is_bad_input() {
    let out = topolab(&["sweep", "scenarios/examples/inception-v3-1xk40.toml", "--out", "/nonexistent-never-written"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("has no [sweep] table"));
    assert!(!std::path::Path::new("/nonexistent-never-written").exists());
}

/// Every command that prints results takes `--format json` and prints JSON a program can parse.
#[test]
fn every_command_that_prints_results_speaks_json() {
    let ex = "scenarios/examples/inception-v3-64w-8ps.toml";
    let commands: &[&[&str]] = &[
        &["run", ex],
        &["sweep", "scenarios/examples/inception-v3-sweep.toml"],
        &["check", ex],
        &["models"],
        &["hardware"],
        &["placement", ex],
        &["plan", ex],
        &["scenarios"],
    ];
    for args in commands {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = topolab(&a);
        assert_eq!(out.status.code(), Some(0), "{a:?}: {}", stderr(&out));
        let v: Result<serde_json::Value, _> = serde_json::from_slice(&out.stdout);
        assert!(v.is_ok(), "{a:?} printed no JSON: {}", stdout(&out));
    }
    // An invalid scenario: exit 2, and the problems as data on stdout.
    let bad = topolab(&["check", "scenarios/invalid/unknown-gpu.toml", "--format", "json"]);
    assert_eq!(bad.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    let p = &v[0]["problems"][0];
    assert_eq!(
        (p["line"].as_u64(), p["column"].as_u64(), p["field"].as_str()),
        (Some(7), Some(7), Some("hardware.gpu")),
        "{v}"
    );
}

/// `run --out` on a scenario with a sweep writes every configuration, not only sweep.csv, and
/// the report of it carries the assumptions and the speedup (regression: only sweep.csv).
#[test]
fn run_out_on_a_sweep_writes_each_configuration_and_the_assumptions() {
    let d = super::TempDir::new("run-sweep-out");
    let (out, rep) = (d.join("runs"), d.join("report"));
    let o = topolab(&["run", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = std::fs::read_to_string(out.join("sweep.csv")).unwrap().lines().count() - 1;
    assert_eq!(rows, 9);
    for i in 0..rows {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("configs/{i:02}/summary.json"))).unwrap())
                .unwrap();
        assert!(v["target"]["time_to_target_s"].as_f64().unwrap() > 0.0 && v["target"]["cost"].as_f64().unwrap() > 0.0);
    }
    let assumptions = std::fs::read_to_string(out.join("assumptions.txt")).unwrap();
    assert!(assumptions.contains("convergence:") && assumptions.contains("k40:"), "{assumptions}");
    let o = topolab(&["report", out.to_str().unwrap(), "--out", rep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(md.contains("Assumptions:") && md.contains("speedup vs 1 GPU") && md.contains("153.7 d"), "{md}");
}

/// An all-reduce scenario: `run` prints the collective's bottleneck in words, `plan` its rounds
/// and bytes; Kubernetes manifests (not built yet) are refused before anything is written.
#[test]
fn an_all_reduce_simulates_plans_and_is_refused_by_kubernetes_manifests() {
    let f = "scenarios/examples/ring-allreduce.toml";
    let out = topolab(&["run", f]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ring all-reduce, no PS") && text.contains("Bottleneck"), "{text}");
    assert!(text.contains("one rank standing for all"), "{text}");
    let out = topolab(&["plan", f, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ranks"], 8);
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 8);
    // 2 (n - 1) / n of the gradients each way.
    let model_bytes = 95_323_048.0f64;
    let egress = hosts[0]["egress_bytes"].as_f64().unwrap();
    assert!((egress / model_bytes - 1.75).abs() < 0.001, "{egress}");
    let d = super::TempDir::new("ring-replay");
    let out = topolab(&["k8s", "manifests", f, "--out", d.join("k").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("Kubernetes manifests of an all-reduce are not built yet"), "{}", stderr(&out));
    assert!(!d.join("k").exists());
}

/// `plan` counts the model's FLOPs and says, in its table form only, how much of them the GPU
/// executes when convolutions run by Winograd's algorithm.
#[test]
fn plan_says_what_the_gpu_executes_of_the_model_flops() {
    let f = "scenarios/examples/vgg-16-backup-partitioned.toml";
    let text = stdout(&topolab(&["plan", f]));
    assert!(text.contains("by Winograd's algorithm and executes 25.7% of them"), "{text}");
    let csv = stdout(&topolab(&["plan", f, "--format", "csv"]));
    assert!(!csv.contains("Winograd"), "{csv}");
    // BERT has no convolutions: nothing to say.
    let bert = stdout(&topolab(&["plan", "scenarios/examples/bert-base-8gpu-hosts.toml"]));
    assert!(!bert.contains("Winograd"), "{bert}");
}
