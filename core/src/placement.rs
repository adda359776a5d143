//! Placement of variables onto parameter-server shards.
//!
//! - **Round-robin** (TensorFlow's `replica_device_setter` default): variable *i* in creation
//!   order goes to shard *i mod ps*. Sizes are ignored, so a shard that happens to receive the
//!   big variables (Inception-v3's 8 MB logits weights, VGG's 400 MB first dense layer) runs hot.
//! - **Greedy** by bytes (longest-processing-time first): variables sorted by size, largest
//!   first, each onto the currently lightest shard. TensorFlow's
//!   `GreedyLoadBalancingStrategy` goes in creation order instead; sorting first is never worse
//!   and bounds the heaviest shard by 4/3 of optimal (Graham 1969).
//! - **Partitioned**: variables larger than a threshold are split along their first dimension
//!   into one part per shard (like `tf.fixed_size_partitioner(ps)`), the rest placed greedily.

use serde::Serialize;

use crate::models::Model;
use crate::scenario::PlacementKind;
use crate::units::Bytes;

/// One piece of a variable on one shard (a whole variable is a single part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VarPart {
    /// Index of the variable in creation order.
    pub var: usize,
    /// Index of the layer that owns it.
    pub layer: usize,
    /// Part number within the variable (0 for unpartitioned variables).
    pub part: u32,
    /// Number of parts the variable is split into.
    pub parts: u32,
    /// Shard holding this part.
    pub shard: u32,
    /// Size of this part.
    pub bytes: Bytes,
}

/// Where every variable (part) lives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// The strategy used.
    pub kind: PlacementKind,
    /// Number of shards.
    pub shards: u32,
    /// All parts, ordered by variable creation order then part number.
    pub parts: Vec<VarPart>,
}

impl Placement {
    /// Places `model`'s variables onto `shards` shards (`shards >= 1`).
    pub fn new(model: &Model, shards: u32, kind: PlacementKind, partition_threshold: Bytes) -> Placement {
        assert!(shards >= 1, "placement needs at least one shard (validated in Scenario)");
        let vars: Vec<(usize, usize, Bytes, u64)> = model
            .layers
            .iter()
            .enumerate()
            .flat_map(|(li, l)| l.variables.iter().map(move |v| (li, v)))
            .enumerate()
            .map(|(vi, (li, v))| (vi, li, v.bytes, v.shape.first().copied().unwrap_or(1)))
            .collect();
        let mut parts = Vec::with_capacity(vars.len());
        let mut load = vec![0u64; shards as usize];
        let lightest = |load: &[u64]| (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        match kind {
            PlacementKind::RoundRobin => {
                for (i, &(vi, li, bytes, _)) in vars.iter().enumerate() {
                    parts.push(VarPart { var: vi, layer: li, part: 0, parts: 1, shard: (i as u32) % shards, bytes });
                }
            }
            PlacementKind::Greedy | PlacementKind::Partitioned => {
                let mut rest: Vec<&(usize, usize, Bytes, u64)> = Vec::new();
                for v in &vars {
                    let &(vi, li, bytes, rows) = v;
                    let n = shards.min(rows.min(u64::from(u32::MAX)) as u32);
                    if kind == PlacementKind::Partitioned && bytes > partition_threshold && n > 1 {
                        // Split rows as evenly as possible: the first (rows % n) parts get one extra.
                        let row_bytes = bytes.0 / rows;
                        for p in 0..n {
                            let r = rows / u64::from(n) + u64::from(u64::from(p) < rows % u64::from(n));
                            parts.push(VarPart {
                                var: vi,
                                layer: li,
                                part: p,
                                parts: n,
                                shard: p,
                                bytes: Bytes(r * row_bytes),
                            });
                            load[p as usize] += r * row_bytes;
                        }
                    } else {
                        rest.push(v);
                    }
                }
                // Largest first; ties keep creation order (stable sort) so placement is deterministic.
                rest.sort_by_key(|v| std::cmp::Reverse(v.2));
                for &&(vi, li, bytes, _) in &rest {
                    let s = lightest(&load);
                    load[s] += bytes.0;
                    parts.push(VarPart { var: vi, layer: li, part: 0, parts: 1, shard: s as u32, bytes });
                }
                parts.sort_by_key(|p| (p.var, p.part));
            }
        }
        Placement { kind, shards, parts }
    }

    /// Bytes held by each shard.
    pub fn shard_bytes(&self) -> Vec<Bytes> {
        let mut b = vec![Bytes(0); self.shards as usize];
        for p in &self.parts {
            b[p.shard as usize] += p.bytes;
        }
        b
    }

    /// Number of variable parts on each shard.
    pub fn shard_parts(&self) -> Vec<usize> {
        let mut n = vec![0; self.shards as usize];
        for p in &self.parts {
            n[p.shard as usize] += 1;
        }
        n
    }

    /// Heaviest shard's bytes over the mean (1.0 = perfectly balanced).
    pub fn imbalance(&self) -> f64 {
        let b = self.shard_bytes();
        let total: u64 = b.iter().map(|x| x.0).sum();
        if total == 0 {
            return 1.0;
        }
        let max = b.iter().map(|x| x.0).max().unwrap_or(0) as f64;
        max / (total as f64 / b.len() as f64)
    }

    /// Index of the heaviest shard (lowest index on ties).
    pub fn heaviest_shard(&self) -> u32 {
        let b = self.shard_bytes();
        (0..b.len()).max_by_key(|&s| (b[s], std::cmp::Reverse(s))).unwrap_or(0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Layer, LayerKind, Variable};

    /// A model with variables of 400, 40, 4000, 40 and 400 bytes, in that creation order.
    fn toy() -> Model {
        let v = |name: &str, elems: u64| Variable { name: name.into(), shape: vec![elems], bytes: Bytes(elems * 4) };
        Model {
            name: "toy".into(),
            sample: "x".into(),
            source: "test".into(),
            layers: vec![Layer {
                name: "l".into(),
                kind: LayerKind::Dense,
                variables: vec![v("a", 100), v("b", 10), v("c", 1000), v("d", 10), v("e", 100)],
                macs: 0,
                forward_flops: 0.0,
                activation_bytes: Bytes(0),
                winograd: false,
            }],
        }
    }

    #[test]
    fn round_robin_ignores_sizes() {
        // Shard 0 gets a, c, e = 400 + 4000 + 400 = 4800; shard 1 gets b, d = 80.
        // Mean = 4880 / 2 = 2440, imbalance = 4800 / 2440 = 1.967.
        let p = Placement::new(&toy(), 2, PlacementKind::RoundRobin, Bytes(1 << 20));
        assert_eq!(p.shard_bytes(), vec![Bytes(4800), Bytes(80)]);
        assert!((p.imbalance() - 4800.0 / 2440.0).abs() < 1e-12);
    }

    #[test]
    fn greedy_puts_the_largest_first() {
        // c (4000) -> s0; a (400) -> s1; e (400) -> s1 (800); b (40) -> s1; d (40) -> s1 = 880.
        let p = Placement::new(&toy(), 2, PlacementKind::Greedy, Bytes(1 << 20));
        assert_eq!(p.shard_bytes(), vec![Bytes(4000), Bytes(880)]);
    }

    #[test]
    fn partitioned_splits_large_variables_by_rows() {
        // c (1000 rows, 4000 B) > 1000 B threshold: 500 rows (2000 B) on each shard; then greedy:
        // a 400 -> s0 (2400), e 400 -> s1 (2400), b 40 -> s0, d 40 -> s1 = 2440 each.
        let p = Placement::new(&toy(), 2, PlacementKind::Partitioned, Bytes(1000));
        assert_eq!(p.shard_bytes(), vec![Bytes(2440), Bytes(2440)]);
        assert_eq!(p.parts.iter().filter(|x| x.var == 2).count(), 2);
        assert!((p.imbalance() - 1.0).abs() < 1e-12);
    }
}
