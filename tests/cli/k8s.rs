//! The Kubernetes objects of a replay: manifests, their offline schema validation, the image's
//! Dockerfile, and the clear error without a cluster.

use std::process::Command;

use super::{root, stderr, stdout, topolab};

fn tmp(name: &str) -> super::TempDir {
    super::TempDir::new(&format!("k8s-{name}"))
}

/// The YAML documents of a job.yaml.
fn documents(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect::<Vec<serde_json::Value>>()
}

fn manifests(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["k8s", "manifests", "scenarios/examples/tiny-mlp-custom-gpu.toml", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    topolab(&args)
}

#[test]
fn manifests_have_a_pod_and_a_headless_service_per_task_and_lock_the_pods_down() {
    let d = tmp("manifests");
    let o =
        manifests(&d.join("out"), &["--namespace", "training", "--image", "registry.example:5000/ml/topolab:0.1.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("4 pods and 4 headless services for 2 PS and 2 workers"), "{}", stdout(&o));
    let docs = documents(&d.join("out/job.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "ConfigMap", "the parent comes first");
    for (kind, n) in [("Pod", 4), ("Service", 4), ("Secret", 1), ("NetworkPolicy", 1), ("PersistentVolumeClaim", 1)] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), n, "{kind}: {kinds:?}");
    }
    let job = "tiny-mlp-custom-gpu";
    for o in &docs {
        assert_eq!(o["metadata"]["namespace"], "training");
        assert_eq!(o["metadata"]["labels"]["topolab.dev/job"], job, "every object is found by label");
    }
    // The parent holds the effective scenario the tasks run.
    let cm = &docs[0];
    assert!(cm["data"]["scenario.toml"].as_str().unwrap().contains("effective-model.csv"));
    assert!(cm["data"]["effective-model.csv"].as_str().unwrap().starts_with("layer,kind"));
    let token =
        docs.iter().find(|o| o["kind"] == "Secret").unwrap()["stringData"]["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64, "a fresh 32-byte token");
    for pod in docs.iter().filter(|o| o["kind"] == "Pod") {
        let spec = &pod["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["image"], "registry.example:5000/ml/topolab:0.1.0");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(c["resources"]["requests"]["memory"].as_str().unwrap().ends_with("Mi"));
        // The cluster spec in one variable, with the shards' DNS names; the token only in
        // the mounted Secret.
        let env = c["env"].as_array().unwrap();
        let spec_json = env.iter().find(|e| e["name"] == "TOPOLAB_CLUSTER").unwrap()["value"].as_str().unwrap();
        let cs: topolab_runtime::cluster::ClusterSpec = serde_json::from_str(spec_json).unwrap();
        assert_eq!(
            cs.ps,
            vec![
                format!("{job}-ps-0.training.svc.cluster.local:2222"),
                format!("{job}-ps-1.training.svc.cluster.local:2222")
            ]
        );
        assert!(cs.job.token.is_empty() && !serde_json::to_string(env).unwrap().contains(&token));
        assert_eq!(pod["metadata"]["name"], format!("{job}-{}-{}", cs.task.kind, cs.task.index));
        // Typed objects: the fields are Kubernetes' own.
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone()).unwrap();
        assert_eq!(typed.spec.unwrap().restart_policy.as_deref(), Some("Never"));
    }
    for svc in docs.iter().filter(|o| o["kind"] == "Service") {
        assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
        let _: k8s_openapi::api::core::v1::Service = serde_json::from_value(svc.clone()).unwrap();
    }
    let np = docs.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["topolab.dev/job"], job);
    // On kind: a hostPath under the nodes' extraMounts instead of a claim.
    let o = manifests(&d.join("kind"), &["--kind"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = documents(&d.join("kind/job.yaml"));
    assert!(docs.iter().all(|o| o["kind"] != "PersistentVolumeClaim"));
    let kind_cfg = std::fs::read_to_string(root().join("kind/cluster.yaml")).unwrap();
    let pod = docs.iter().find(|o| o["kind"] == "Pod").unwrap();
    let host = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "checkpoints").unwrap();
    let path = host["hostPath"]["path"].as_str().unwrap();
    assert!(
        kind_cfg.contains("containerPath: /var/lib/topolab/checkpoints")
            && path.starts_with("/var/lib/topolab/checkpoints/")
    );
}

#[test]
fn bad_names_and_images_are_refused_before_anything_is_written() {
    let d = tmp("bad");
    for (args, want) in [
        (vec!["--namespace", "Training"], "--namespace"),
        (vec!["--image", "Topolab:latest"], "--image"),
        (vec!["--image", "topolab:bad tag"], "--image"),
        (vec!["--job", "Bad_Job"], "--job"),
    ] {
        let out = d.join("out");
        let o = manifests(&out, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(!out.exists(), "{args:?}: nothing written");
    }
}

#[test]
fn a_kubernetes_replay_without_a_cluster_exits_2_naming_what_was_tried() {
    let d = tmp("no-cluster");
    let run = d.join("run");
    let kubeconfig = d.join("no-such-kubeconfig");
    let o = super::topolab_env(
        &["replay", "scenarios/examples/tiny-mlp-custom-gpu.toml", "--launcher", "k8s", "--out", run.to_str().unwrap()],
        &[
            ("KUBECONFIG", Some(kubeconfig.as_os_str())),
            ("HOME", Some(d.as_os_str())),
            ("KUBERNETES_SERVICE_HOST", None),
        ],
    );
    let e = super::bad_input_line(&o);
    assert!(e.contains("no Kubernetes cluster") && e.contains("KUBECONFIG="), "{e}");
    assert!(!d.join("run").exists(), "nothing created");
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_the_binary_as_a_non_root_user_in_another() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let stages: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.starts_with("FROM ")).map(|(i, _)| i).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {lines:?}");
    let build = &lines[stages[0]..stages[1]];
    let run = &lines[stages[1]..];
    assert!(build[0].ends_with(" AS build"), "{}", build[0]);
    assert!(build.iter().any(|l| l.starts_with("RUN cargo build --release")), "{build:?}");
    assert!(
        run.iter().any(|l| l.starts_with("COPY --from=build ") && l.ends_with(" /usr/local/bin/topolab")),
        "{run:?}"
    );
    // The manifests run /usr/local/bin/topolab as this user.
    let user = run.iter().rev().find(|l| l.starts_with("USER ")).expect("a USER in the runtime stage");
    let uid = user.trim_start_matches("USER ").split(':').next().unwrap();
    assert_eq!(uid.parse::<i64>().ok(), Some(topolab_runtime::k8s::USER), "{user}");
    assert!(!run.iter().any(|l| l.starts_with("RUN cargo")), "no toolchain in the runtime image");
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

#[test]
#[ignore = "needs kubernetes-validate (scripts/setup-k8s-validate.sh): cargo test -- --ignored"]
fn manifests_pass_strict_validation_against_the_kubernetes_schemas() {
    let validator = root().join(".venv-tools/bin/kubernetes-validate");
    assert!(validator.exists(), "kubernetes-validate is not installed: run bash scripts/setup-k8s-validate.sh");
    let d = tmp("validate");
    for (dir, extra) in [("pvc", vec![]), ("kind", vec!["--kind"])] {
        let out = d.join(dir);
        let o = manifests(&out, &extra);
        assert!(o.status.success(), "{}", stderr(&o));
        let v = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(out.join("job.yaml"))
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "{dir}: {}\n{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }
}

/// The Kubernetes version the manifests are validated against (k8s-openapi's `v1_33`).
const KUBERNETES_VERSION: &str = "1.33";
