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

/// Removes the per-namespace hosts files of the executed-manifests test, also when it fails,
/// and /etc/netns itself if the test created it.
struct HostsFiles {
    dirs: Vec<std::path::PathBuf>,
    created_root: bool,
}

impl Drop for HostsFiles {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        if self.created_root {
            let _ = std::fs::remove_dir("/etc/netns");
        }
    }
}

#[test]
#[ignore = "needs root (network namespaces): as root, cargo test -- --ignored"]
fn the_generated_pods_run_as_processes_in_namespaces_and_train_with_a_late_dns_name() {
    use topolab_runtime::cluster::{ClusterSpec, ENV, TOKEN_FILE_ENV};
    assert!(topolab_runtime::netns::is_root(), "this test needs root (network namespaces)");
    let _guard = super::replay::netns_lock();
    let d = tmp("executed");
    let o = manifests(&d.join("k8s"), &["--namespace", "training"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = documents(&d.join("k8s/job.yaml"));
    // The volumes as directories: the ConfigMap's files, the Secret's token, the checkpoints
    // and each pod's emptyDir.
    let config = d.join("config");
    std::fs::create_dir_all(&config).unwrap();
    for (k, v) in docs[0]["data"].as_object().unwrap() {
        std::fs::write(config.join(k), v.as_str().unwrap()).unwrap();
    }
    let secret = d.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let token = docs.iter().find(|o| o["kind"] == "Secret").unwrap()["stringData"]["token"].as_str().unwrap();
    std::fs::write(secret.join("token"), token).unwrap();
    let pods: Vec<&serde_json::Value> = docs.iter().filter(|o| o["kind"] == "Pod").collect();
    let services: Vec<&serde_json::Value> = docs.iter().filter(|o| o["kind"] == "Service").collect();
    assert_eq!(pods.len(), 4);
    // One virtual host per pod; each Service name resolves to its pod's address through the
    // namespace's hosts file (`ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts).
    let s =
        topolab_core::scenario::Scenario::load(&root().join("scenarios/examples/tiny-mlp-custom-gpu.toml")).unwrap();
    let cluster = topolab_runtime::netns::VirtualCluster::create(
        &format!("{}-k8s", std::process::id()),
        pods.len(),
        s.nic,
        topolab_core::units::Time::ZERO,
    )
    .unwrap();
    let mut hosts_files = HostsFiles { dirs: Vec::new(), created_root: !std::path::Path::new("/etc/netns").exists() };
    let names: Vec<String> = pods.iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect();
    let table = |with_ps: bool| {
        let mut t = String::from("127.0.0.1 localhost\n");
        for (i, n) in names.iter().enumerate() {
            if with_ps || !n.contains("-ps-") {
                t.push_str(&format!("{} {n}.training.svc.cluster.local {n}\n", cluster.addrs[i]));
            }
        }
        t
    };
    assert_eq!(services.len(), names.len());
    let late = names.iter().position(|n| n.ends_with("-worker-0")).unwrap();
    for (i, ns) in cluster.hosts.iter().enumerate() {
        let dir = std::path::Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        hosts_files.dirs.push(dir.clone());
        // Worker 0 starts before the shards' names resolve on its host.
        std::fs::write(dir.join("hosts"), table(i != late)).unwrap();
    }
    let mut children = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["command"], serde_json::json!(["/usr/local/bin/topolab", "node"]));
        let env = c["env"].as_array().unwrap();
        let value = |name: &str| env.iter().find(|e| e["name"] == name).unwrap()["value"].as_str().unwrap().to_string();
        let mut spec: ClusterSpec = serde_json::from_str(&value(ENV)).unwrap();
        // Mount points become the directories above.
        spec.job.scenario = config.join("scenario.toml");
        spec.job.out = d.join(format!("out-{}", names[i]));
        spec.job.checkpoint_dir = d.join("checkpoints");
        let token_file = value(TOKEN_FILE_ENV).replace(topolab_runtime::k8s::SECRET_DIR, secret.to_str().unwrap());
        // One log for stdout and stderr, as a container's.
        let log = std::fs::File::create(d.join(format!("{}.log", names[i]))).unwrap();
        let mut cmd = cluster.command(i, std::path::Path::new(env!("CARGO_BIN_EXE_topolab")));
        cmd.arg("node");
        for e in env {
            cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
        }
        cmd.env(ENV, serde_json::to_string(&spec).unwrap())
            .env(TOKEN_FILE_ENV, token_file)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        children.push((names[i].clone(), cmd.spawn().unwrap()));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let resolved_at = topolab_runtime::wire::monotonic_ns();
    std::fs::write(std::path::Path::new("/etc/netns").join(&cluster.hosts[late]).join("hosts"), table(true)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut statuses = Vec::new();
    for (name, mut child) in children {
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        statuses.push((name, st));
    }
    drop(cluster);
    for (name, st) in &statuses {
        let log = std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap_or_default();
        assert!(st.is_some_and(|s| s.success()), "{name}: {st:?}\n{log}");
    }
    // Both workers trained every step, as under the netns launcher; the late one started
    // only once its shards' names resolved.
    let steps = s.spec.training.steps as usize;
    for (w, name) in names.iter().filter(|n| n.contains("-worker-")).enumerate() {
        let p = d.join(format!("out-{name}/trace/worker-{w}.steps.csv"));
        let f = std::fs::File::open(&p).unwrap();
        let recs = topolab_core::records::read_steps_csv(f, "steps").unwrap();
        assert_eq!(recs.len(), steps, "{name}");
        if name.ends_with("-worker-0") {
            assert!(recs[0].start_ns >= resolved_at, "worker 0 began before its shards' names resolved");
        }
    }
    // The launcher reads the traces back from the pods' logs: there they are whole, equal
    // to the files, between the runtime's own lines.
    for (w, name) in names.iter().filter(|n| n.contains("-worker-")).enumerate() {
        let log = std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap();
        let mut reader = topolab_runtime::tracelog::Reader::new();
        let mut files = std::collections::BTreeMap::new();
        let mut progress = 0;
        for line in log.lines() {
            match reader.line(line).unwrap() {
                topolab_runtime::tracelog::Line::File(f, text) => drop(files.insert(f, text)),
                topolab_runtime::tracelog::Line::Progress(n) => progress = n,
                _ => {}
            }
        }
        assert_eq!(progress, steps as u64, "{name}'s last progress line");
        for kind in ["steps", "ops", "loss"] {
            let f = format!("worker-{w}.{kind}.csv");
            let on_disk = std::fs::read_to_string(d.join(format!("out-{name}/trace/{f}"))).unwrap();
            assert_eq!(files.get(&f), Some(&on_disk), "{f} from {name}'s log");
        }
    }
    let worker1 = names.iter().find(|n| n.ends_with("-worker-1")).unwrap();
    let loss = std::fs::read_to_string(d.join(format!("out-{worker1}/trace/worker-1.loss.csv"))).unwrap();
    let values: Vec<f64> = loss.lines().skip(1).filter_map(|l| l.split(',').nth(2)?.parse().ok()).collect();
    assert!(values[values.len() - 1] < values[0], "the loss falls: {values:?}");
    drop(hosts_files);
    for ns in ip_netns() {
        assert!(!ns.contains(&format!("{}-k8s", std::process::id())), "namespace {ns} left behind");
    }
}

fn ip_netns() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}
