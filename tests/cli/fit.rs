//! `topolab fit`: bad run directories are refused with the file and what is missing, exit 2,
//! and no profile is written; a good one writes a profile `topolab run --profile` uses.

use super::{bad_input_line, stdout, topolab};

fn tmp(name: &str) -> super::TempDir {
    super::TempDir::new(&format!("fit-{name}"))
}

const SCENARIO: &str = "name = \"r\"\nbatch = 8\n[model]\nname = \"alexnet\"\n[network]\nnic = \"1 Gbit/s\"\n[topology]\nworkers = 1\nps = 1\n";

fn fit(dirs: &[&std::path::Path], out: &std::path::Path) -> std::process::Output {
    let mut args: Vec<&str> = vec!["fit"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    args.extend(["--out", out.to_str().unwrap()]);
    topolab(&args)
}

#[test]
fn bad_run_directories_name_the_file_and_what_is_missing_and_write_nothing() {
    let d = tmp("bad");
    let out = d.join("profile.toml");
    let run = d.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let cases: [(&str, Option<&str>, Option<&str>, &str); 5] = [
        ("no scenario", None, Some("worker,step,step_time_s\n0,0,0.1\n"), "scenario.toml: missing"),
        ("no steps", Some(SCENARIO), None, "steps.csv"),
        (
            "no step time",
            Some(SCENARIO),
            Some("worker,step,loss\n0,0,1.0\n"),
            "no step time: needs a `step_time_s` column",
        ),
        ("no worker column", Some(SCENARIO), Some("step,step_time_s\n0,0.1\n"), "no `worker` column"),
        (
            "a bad value",
            Some(SCENARIO),
            Some("worker,step,step_time_s\n0,0,-1\n"),
            "line 2: step_time_s = `-1` is not a number >= 0",
        ),
    ];
    for (what, scenario, steps, want) in cases {
        for f in ["scenario.toml", "steps.csv", "ops.csv"] {
            let _ = std::fs::remove_file(run.join(f));
        }
        if let Some(s) = scenario {
            std::fs::write(run.join("scenario.toml"), s).unwrap();
        }
        if let Some(s) = steps {
            std::fs::write(run.join("steps.csv"), s).unwrap();
        }
        let e = bad_input_line(&fit(&[&run], &out));
        assert!(e.contains(want), "{what}: {e}");
        assert!(!out.exists(), "{what}: no profile written");
    }
    // A trace whose layers are not the model's.
    std::fs::write(run.join("scenario.toml"), SCENARIO).unwrap();
    std::fs::write(run.join("steps.csv"), "worker,step,step_time_s\n0,0,0.1\n").unwrap();
    std::fs::write(run.join("ops.csv"), "worker,step,op,index,bytes,start_ns,end_ns\n0,0,compute-forward,99,0,0,10\n")
        .unwrap();
    let e = bad_input_line(&fit(&[&run], &out));
    assert!(e.contains("ops.csv") && e.contains("layer index 99") && e.contains("match no layer"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_fitted_profile_is_what_run_uses() {
    let d = tmp("good");
    let run = d.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("scenario.toml"), SCENARIO).unwrap();
    // 20 steps of 5 s, 0.25 s of it compute: AlexNet's 244 MB each way at 1 Gbit/s take
    // 3.9 s at full rate, so about 0.8 of it.
    let mut steps = String::from("worker,step,step_time_s,compute_s\n");
    for i in 0..20 {
        steps.push_str(&format!("0,{i},5.0,0.25\n"));
    }
    std::fs::write(run.join("steps.csv"), steps).unwrap();
    let out = d.join("profile.toml");
    let o = fit(&[&run], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = stdout(&o);
    assert!(table.contains("compute_rate") && table.contains("Residuals"), "{table}");
    let profile = topolab_core::profile::Profile::load(&out).unwrap();
    // AlexNet at batch 8: 3 x forward FLOPs x 8 in 0.25 s.
    let s = topolab_core::scenario::Scenario::load(&run.join("scenario.toml")).unwrap();
    let rate = 3.0 * s.model.forward_flops() * 8.0 / 0.25;
    // (The profile writes 6 significant digits.)
    assert!((profile.fitted.compute_rate.0 / rate - 1.0).abs() < 1e-5, "{} vs {rate}", profile.fitted.compute_rate);
    let o = topolab(&[
        "run",
        run.join("scenario.toml").to_str().unwrap(),
        "--profile",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let p50 = v["step_time_s"]["p50"].as_f64().unwrap();
    assert!((p50 / 5.0 - 1.0).abs() < 0.01, "the profile predicts the run it came from: {p50}");
    assert!(profile.fitted.goodput > 0.7 && profile.fitted.goodput < 0.9, "{}", profile.fitted.goodput);
}

#[test]
fn a_profile_with_compute_jitter_and_a_scenario_with_jitter_is_refused() {
    let d = tmp("jitter");
    std::fs::create_dir_all(&*d).unwrap();
    let profile = "[machine]\ncpu = \"t\"\ncores = 1\nmemory = \"\"\ndate = \"\"\nlauncher = \"measured\"\n\n[fitted]\ncompute_rate = \"1 TFLOP/s\"\ncores = 1\ngoodput = 0.9\nmessage_overhead = \"0 ns\"\nps_memory_bandwidth = \"100 Gbit/s\"\nstartup = \"0 ns\"\ncompute_jitter = 0.05\n";
    std::fs::write(d.join("p.toml"), profile).unwrap();
    std::fs::write(d.join("s.toml"), format!("{SCENARIO}[hardware]\nprofile = \"p.toml\"\n[faults]\njitter = 0.1\n"))
        .unwrap();
    let o = topolab(&["run", d.join("s.toml").to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("s.toml:") && e.contains("`faults.jitter` has no effect") && e.contains("compute_jitter"),
        "{e}"
    );
    // Alone, the profile's jitter spreads the steps.
    std::fs::write(d.join("s.toml"), format!("{SCENARIO}[training]\nsteps = 40\n[hardware]\nprofile = \"p.toml\"\n"))
        .unwrap();
    let o = topolab(&["run", d.join("s.toml").to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let st = &v["step_time_s"];
    assert!(st["p90"].as_f64().unwrap() > st["p10"].as_f64().unwrap(), "{st}");
}

/// A TensorFlow-timeline-style Chrome trace of `steps` steps of `s`: each layer's forward
/// (`InceptionV3/<layer>/Conv2D`, TF-slim's doubled scope) and backward (`gradients/...`) as
/// node names in `args.name`,
/// forward taking `forward_flops x batch / rate` and backward twice that, plus ops of no layer.
fn tf_trace(s: &topolab_core::scenario::Scenario, rate: f64, steps: u32) -> String {
    let batch = s.spec.batch as f64;
    let mut events = Vec::new();
    let mut t = 0.0;
    for _ in 0..steps {
        for l in &s.model.layers {
            let fwd = l.forward_flops * batch / rate * 1e6;
            let node = format!("InceptionV3/{}/Conv2D", l.name);
            events.push(serde_json::json!({"ph": "X", "name": "Conv2D", "ts": t, "dur": fwd, "pid": 0, "tid": 0, "args": {"name": node}}));
            t += fwd;
        }
        for l in s.model.layers.iter().rev() {
            let bwd = 2.0 * l.forward_flops * batch / rate * 1e6;
            let node = format!("gradients/InceptionV3/{}/Conv2D_grad/Conv2DBackpropInput", l.name);
            events.push(serde_json::json!({"ph": "X", "name": "Conv2DBackpropInput", "ts": t, "dur": bwd, "pid": 0, "tid": 0, "args": {"name": node}}));
            t += bwd;
        }
        events.push(serde_json::json!({"ph": "X", "name": "RecvTensor", "ts": t, "dur": 500.0, "pid": 1, "tid": 0}));
        t += 1000.0;
    }
    serde_json::json!({ "traceEvents": events }).to_string()
}

#[test]
fn a_chrome_trace_gives_the_per_layer_compute_and_one_that_names_no_layer_is_refused() {
    let d = tmp("trace");
    let run = d.join("run");
    std::fs::create_dir_all(&run).unwrap();
    // A custom layer table with TensorFlow-style scope names.
    std::fs::write(
        run.join("model.csv"),
        "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes\n\
         InceptionV3/Conv2d_1a_3x3,conv,100000000,200000000,2000000,InceptionV3/Conv2d_1a_3x3/weights,3x3x3x32,3456\n\
         InceptionV3/Conv2d_2a_3x3,conv,300000000,600000000,1600000,InceptionV3/Conv2d_2a_3x3/weights,3x3x32x64,73728\n\
         InceptionV3/Logits,dense,2000000,4000000,4000,InceptionV3/Logits/weights,2048x1000,8192000\n",
    )
    .unwrap();
    std::fs::write(
        run.join("scenario.toml"),
        "name = \"t\"\nbatch = 8\n[model]\nlayers = \"model.csv\"\n[network]\nnic = \"1 Gbit/s\"\n[topology]\nworkers = 1\nps = 1\n",
    )
    .unwrap();
    let s = topolab_core::scenario::Scenario::load(&run.join("scenario.toml")).unwrap();
    let rate = 2.0e12;
    std::fs::write(run.join("trace.json"), tf_trace(&s, rate, 5)).unwrap();
    // No compute column: the trace's layers are the step's compute.
    let mut steps = String::from("worker,step,step_time_s\n");
    for i in 0..5 {
        steps.push_str(&format!("0,{i},0.2\n"));
    }
    std::fs::write(run.join("steps.csv"), steps).unwrap();
    let out = d.join("profile.toml");
    let o = fit(&[&run], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("(trace.json)"), "{}", stdout(&o));
    let profile = topolab_core::profile::Profile::load(&out).unwrap();
    assert!((profile.fitted.compute_rate.0 / rate - 1.0).abs() < 1e-3, "{}", profile.fitted.compute_rate);

    // Op names of another model: exit 2, the file and what is missing, no profile.
    std::fs::remove_file(&out).unwrap();
    let other = tf_trace(&s, rate, 2).replace("/Conv2d_", "/Mixed_").replace("/Logits", "/AuxLogits");
    std::fs::write(run.join("trace.json"), other).unwrap();
    let e = bad_input_line(&fit(&[&run], &out));
    assert!(e.contains("trace.json") && e.contains("match no layer") && e.contains("`Conv2D`"), "{e}");
    assert!(!out.exists(), "no profile written");
}
