//! `topolab k8s`: a replay's Kubernetes objects.

use std::path::PathBuf;
use std::process::ExitCode;

use topolab_runtime::k8s::{self, CheckpointVolume, ManifestOptions};
use topolab_runtime::launcher::{self, LauncherKind, ReplayCompute, ReplaySettings};
use topolab_runtime::proxy::Proxy;

use super::BadInput;

/// Kubernetes objects of a replay.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: K8sCommand,
}

#[derive(clap::Subcommand)]
enum K8sCommand {
    Manifests(ManifestArgs),
}

/// Write the objects a Kubernetes replay of a scenario creates, as YAML (job.yaml).
#[derive(clap::Args)]
#[command(after_help = "\
Writes DIR/job.yaml (one document per object: the parent ConfigMap with the effective scenario,
the job token as a Secret, per task a Pod and a headless Service for its DNS name, a
NetworkPolicy admitting only the job's pods, and the checkpoint volume) next to the effective
scenario it replays (DIR/effective.toml, DIR/effective-model.csv). The pods run the image's
`topolab node` as a non-root user with a read-only root file system and no capabilities.

Apply by hand with `kubectl apply -f DIR/job.yaml`; remove everything with
`kubectl delete all,cm,secret,networkpolicy,pvc -l topolab.dev/job=JOB`.

Examples:
  topolab k8s manifests scenarios/examples/tiny-mlp-custom-gpu.toml --out k8s/tiny
  topolab k8s manifests S.toml --out k8s/s --image registry.example/topolab:0.1.0 --namespace training
  topolab k8s manifests S.toml --out k8s/s --kind          # checkpoints on the kind nodes' extraMounts")]
pub struct ManifestArgs {
    /// Scenario file.
    scenario: PathBuf,
    /// Directory to write job.yaml and the effective scenario into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Container image with /usr/local/bin/topolab (see the Dockerfile).
    #[arg(long, default_value = "topolab:latest", value_name = "IMG")]
    image: String,
    /// Namespace of the objects.
    #[arg(long, default_value = "default", value_name = "NS")]
    namespace: String,
    /// Job name: prefixes every object (default: the scenario's name, as a DNS label).
    #[arg(long)]
    job: Option<String>,
    /// What the pods run (tensorflow: not built yet for Kubernetes).
    #[arg(long, value_enum, default_value_t)]
    engine: super::replay::EngineArg,
    /// Checkpoints on a hostPath backed by the kind config's extraMounts (kind/cluster.yaml)
    /// instead of a ReadWriteMany PersistentVolumeClaim.
    #[arg(long)]
    kind: bool,
    /// Seconds a task waits for its peers (their names to resolve, their connections).
    #[arg(long, default_value_t = 120, value_name = "S")]
    timeout: u64,
}

/// The host directory kind's nodes mount for checkpoints (kind/cluster.yaml, extraMounts).
pub const KIND_CHECKPOINTS: &str = "/var/lib/topolab/checkpoints";

/// Where a job's checkpoints go: on kind a hostPath, else a claim for every shard's
/// checkpoint twice (the one being written and the last complete one) of `params` bytes of
/// parameters (with their optimizer state: 3x).
pub fn checkpoint_volume(kind: bool, params: u64) -> CheckpointVolume {
    if kind {
        CheckpointVolume::HostPath(KIND_CHECKPOINTS.into())
    } else {
        CheckpointVolume::Claim { bytes: 2 * 3 * params }
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        K8sCommand::Manifests(m) => manifests(m),
    }
}

fn manifests(a: ManifestArgs) -> anyhow::Result<ExitCode> {
    if a.engine == super::replay::EngineArg::Tensorflow {
        return Err(BadInput(
            "error: --engine tensorflow on Kubernetes (pods, or a Kubeflow TFJob with --format tfjob) is not built yet; the topolab engine's manifests are"
                .into(),
        )
        .into());
    }
    let s = super::load_scenario(Some(&a.scenario))?;
    let job = a.job.clone().unwrap_or_else(|| k8s::dns_label(&s.spec.name));
    // The same checks as the objects make, before anything is written.
    k8s::check_label("job name", &job, 40).map_err(|e| BadInput(format!("error: --job: {e}")))?;
    k8s::check_label("namespace", &a.namespace, 63).map_err(|e| BadInput(format!("error: --namespace: {e}")))?;
    k8s::check_image(&a.image).map_err(|e| BadInput(format!("error: --image: {e}")))?;
    std::fs::create_dir_all(&a.out)?;
    let settings = ReplaySettings::of(&s);
    let proxy = Proxy::new(&s, settings.params_scale, settings.flops_scale);
    let (eff_path, eff) = launcher::effective_scenario(&s, &proxy, &a.out, LauncherKind::K8s, &ReplayCompute::Cpu)?;
    let eff_toml = std::fs::read_to_string(&eff_path)?;
    let layers = std::fs::read_to_string(a.out.join("effective-model.csv"))?;
    let params: u64 = proxy.var_sizes().iter().map(|&n| n as u64 * 4).sum();
    let opts = ManifestOptions {
        job: job.clone(),
        namespace: a.namespace.clone(),
        image: a.image.clone(),
        checkpoints: checkpoint_volume(a.kind, params),
        timeout_s: a.timeout,
    };
    let objects = k8s::objects(&eff, &eff_toml, &layers, &opts)
        .map_err(|e| BadInput(format!("error: cannot make manifests: {e}")))?;
    let token = topolab_runtime::wire::Token::random().hex();
    let path = a.out.join("job.yaml");
    topolab_sim::write_atomic(&path, k8s::to_yaml(&objects, &token).as_bytes())?;
    let count = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).count();
    println!(
        "wrote {} ({} pods and {} headless services for {} PS and {} workers, a ConfigMap, a Secret, a NetworkPolicy{}) for namespace {}",
        path.display(),
        count("Pod"),
        count("Service"),
        s.spec.topology.ps,
        s.spec.topology.workers,
        if a.kind { "; checkpoints on the kind nodes' extraMounts" } else { ", a PersistentVolumeClaim" },
        a.namespace
    );
    println!(
        "apply: kubectl apply -f {}; remove: kubectl delete all,cm,secret,networkpolicy,pvc -l topolab.dev/job={job}",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
