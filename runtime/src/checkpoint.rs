//! Checkpoints: each shard writes its parameters atomically and a manifest with a checksum.
//!
//! Layout: `DIR/step-N/shard-S.bin` (little-endian f32 of every part on the shard, in part
//! order) and `DIR/step-N/shard-S.json` (step, shard, byte count, SHA-256). Each file is
//! written to a temporary name, fsynced and renamed; the manifest goes last. A checkpoint is
//! complete when every shard's manifest exists and its data matches the checksum, so a crash
//! in the middle of writing leaves the previous complete checkpoint as the one to resume from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use topolab_core::atomic::write_atomic;

/// A shard's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Step the parameters are at (steps applied).
    pub step: u64,
    /// Shard.
    pub shard: u32,
    /// Bytes of the data file.
    pub bytes: u64,
    /// SHA-256 of the data file, hex.
    pub sha256: String,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn step_dir(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step}"))
}

/// Writes shard `shard`'s parameters at `step`.
pub fn write(dir: &Path, step: u64, shard: u32, params: &[f32]) -> std::io::Result<()> {
    let d = step_dir(dir, step);
    std::fs::create_dir_all(&d)?;
    let data = crate::wire::f32_bytes(params);
    write_atomic(&d.join(format!("shard-{shard}.bin")), &data)?;
    let m = Manifest { step, shard, bytes: data.len() as u64, sha256: hex(&Sha256::digest(&data)) };
    write_atomic(&d.join(format!("shard-{shard}.json")), serde_json::to_string_pretty(&m).expect("JSON").as_bytes())
}

/// Reads the checkpoint of `shard` at `step` into `values`, in order (each filled to its length).
pub fn read_into(dir: &Path, step: u64, shard: u32, values: &mut [Vec<f32>]) -> Result<(), String> {
    let flat = read(dir, step, shard)?;
    let mut off = 0;
    for v in values {
        let n = v.len();
        v.copy_from_slice(flat.get(off..off + n).ok_or("checkpoint has too few values")?);
        off += n;
    }
    Ok(())
}

/// Reads and verifies shard `shard` at `step`.
pub fn read(dir: &Path, step: u64, shard: u32) -> Result<Vec<f32>, String> {
    let d = step_dir(dir, step);
    let mpath = d.join(format!("shard-{shard}.json"));
    let m: Manifest = serde_json::from_slice(&std::fs::read(&mpath).map_err(|e| format!("{}: {e}", mpath.display()))?)
        .map_err(|e| format!("{}: {e}", mpath.display()))?;
    let dpath = d.join(format!("shard-{shard}.bin"));
    let data = std::fs::read(&dpath).map_err(|e| format!("{}: {e}", dpath.display()))?;
    if m.step != step || m.shard != shard || data.len() as u64 != m.bytes || hex(&Sha256::digest(&data)) != m.sha256 {
        return Err(format!("{}: does not match its manifest", dpath.display()));
    }
    crate::wire::bytes_f32(&data).ok_or_else(|| format!("{}: not whole f32 values", dpath.display()))
}

/// The latest step at which all `shards` have a verified checkpoint.
pub fn latest_complete(dir: &Path, shards: u32) -> Option<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort_unstable();
    steps.into_iter().rev().find(|&s| (0..shards).all(|sh| read(dir, s, sh).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed when the test ends, passed or failed.
    fn tmp(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("topolab-ckpt-{name}-")).tempdir().unwrap()
    }

    #[test]
    fn complete_checkpoints_read_back() {
        let d = tmp("ok");
        write(d.path(), 4, 0, &[1.0, 2.0]).unwrap();
        write(d.path(), 4, 1, &[3.0]).unwrap();
        assert_eq!(latest_complete(d.path(), 2), Some(4));
        assert_eq!(read(d.path(), 4, 1).unwrap(), vec![3.0]);
    }

    #[test]
    fn a_torn_checkpoint_leaves_the_previous_one_valid() {
        let d = tmp("torn");
        for sh in 0..2 {
            write(d.path(), 2, sh, &[1.0, 2.0, 3.0]).unwrap();
        }
        // Step 4: shard 0 done; shard 1 crashed after writing its data file but before the
        // manifest (and left a temporary file behind).
        write(d.path(), 4, 0, &[4.0, 5.0, 6.0]).unwrap();
        std::fs::write(d.path().join("step-4/shard-1.bin"), crate::wire::f32_bytes(&[7.0, 8.0])).unwrap();
        std::fs::write(d.path().join("step-4/shard-1.tmp"), b"partial").unwrap();
        assert_eq!(latest_complete(d.path(), 2), Some(2));
        // Step 6: both manifests present but shard 1's data truncated after the fact.
        for sh in 0..2 {
            write(d.path(), 6, sh, &[9.0, 9.0, 9.0]).unwrap();
        }
        let f = d.path().join("step-6/shard-1.bin");
        let data = std::fs::read(&f).unwrap();
        std::fs::write(&f, &data[..data.len() - 4]).unwrap();
        assert_eq!(latest_complete(d.path(), 2), Some(2));
        assert!(read(d.path(), 6, 1).unwrap_err().contains("does not match its manifest"));
    }
}
