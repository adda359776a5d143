//! Max-min fair sharing of capacities among flows (progressive filling).
//!
//! A *resource* (a NIC direction, a rack uplink) has a capacity in bytes per ns. A *flow* is a
//! group of identical connections: it crosses each of its resources with a weight, the number
//! of its connections on that resource (1 on a per-host NIC of a class of identical hosts, the
//! class size on a shared NIC or uplink). Every connection of a flow gets the same rate, so the
//! allocation is max-min fair over individual connections.
//!
//! Progressive filling: raise the rate of every unfrozen flow together; when a resource is
//! full, freeze the flows that cross it; repeat. [`solve`] does this for any subset of flows
//! (the incremental solver calls it on the connected component that changed); [`reference`] is
//! the same textbook algorithm written plainly over all flows, used by tests to check the
//! incremental one.

/// A flow's use of one resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Use {
    /// Resource index.
    pub resource: usize,
    /// Connections of the flow on this resource.
    pub weight: f64,
}

/// Max-min fair rates of `flows` (flow ids, whose paths `path_of` gives) under `capacity` per
/// resource. Resources used by flows outside `flows` are taken to be free of them. Returns
/// rates in the order of `flows`.
///
/// Cost: one pass over the paths to index them, then one round per distinct fair level, each
/// a scan of the touched resources plus the paths of the flows it freezes: O(R x levels + P)
/// for R resources and P path entries.
pub fn solve<'p>(
    flows: &[usize],
    path_of: impl Fn(usize) -> &'p [Use],
    capacity: &[f64],
    scratch: &mut Scratch,
) -> Vec<f64> {
    let n = flows.len();
    let mut rate = vec![0.0; n];
    let mut frozen = std::mem::take(&mut scratch.frozen);
    frozen.clear();
    frozen.resize(n, false);
    let mut remaining = n;
    let mut touched = std::mem::take(&mut scratch.touched);
    let mut active = std::mem::take(&mut scratch.active);
    let mut full = std::mem::take(&mut scratch.full);
    touched.clear();
    for (i, &f) in flows.iter().enumerate() {
        let path = path_of(f);
        if path.is_empty() {
            // Unconstrained.
            rate[i] = f64::INFINITY;
            frozen[i] = true;
            remaining -= 1;
            continue;
        }
        for u in path {
            let r = u.resource;
            if !scratch.seen[r] {
                scratch.seen[r] = true;
                scratch.left[r] = capacity[r];
                touched.push(r);
            }
            scratch.weight[r] += u.weight;
            scratch.count[r] += 1;
            scratch.users[r].push(i);
        }
    }
    for &r in &touched {
        scratch.summed[r] = scratch.weight[r];
    }
    // Resources that still carry unfrozen flows, in the order they were first touched (the
    // first of equal increments wins, as in the reference).
    active.clear();
    active.extend_from_slice(&touched);
    let mut level = 0.0f64;
    while remaining > 0 {
        // The next resource to fill: the smallest level increment (left / unfrozen weight).
        let mut best: Option<(f64, usize)> = None;
        for &r in &active {
            let inc = (scratch.left[r] / scratch.weight[r]).max(0.0);
            if best.is_none_or(|(b, _)| inc < b) {
                best = Some((inc, r));
            }
        }
        let Some((inc, argmin)) = best else { break };
        level += inc;
        // Fill every active resource by the increment; the full ones (the argmin always is)
        // freeze their flows.
        full.clear();
        for &r in &active {
            scratch.left[r] -= inc * scratch.weight[r];
            if r == argmin || scratch.left[r] <= 1e-12 * capacity[r] {
                full.push(r);
            }
        }
        for &r in &full {
            if scratch.count[r] == 0 {
                continue;
            }
            for j in 0..scratch.users[r].len() {
                let i = scratch.users[r][j];
                if frozen[i] {
                    continue;
                }
                frozen[i] = true;
                rate[i] = level;
                remaining -= 1;
                for u in path_of(flows[i]) {
                    let r = u.resource;
                    scratch.count[r] -= 1;
                    if scratch.count[r] == 0 {
                        scratch.weight[r] = 0.0;
                        continue;
                    }
                    scratch.weight[r] -= u.weight;
                    if scratch.weight[r] < CANCEL * scratch.summed[r] {
                        // Most of the weight just left: the difference of two near sums keeps
                        // few correct digits (shares a billion apart). Sum what is left anew.
                        scratch.weight[r] = unfrozen_weight(r, &scratch.users[r], &frozen, flows, &path_of);
                        scratch.summed[r] = scratch.weight[r];
                    }
                }
            }
        }
        active.retain(|&r| scratch.count[r] > 0);
    }
    for &r in &touched {
        scratch.seen[r] = false;
        scratch.weight[r] = 0.0;
        scratch.left[r] = 0.0;
        scratch.count[r] = 0;
        scratch.users[r].clear();
    }
    (scratch.frozen, scratch.touched, scratch.active, scratch.full) = (frozen, touched, active, full);
    rate
}

/// When a resource's unfrozen weight, kept by subtraction, falls below this fraction of the
/// sum it was last computed from, it is summed again from the unfrozen flows: subtracting
/// away all but 1e-4 of a sum leaves its relative error 1e4 times larger (about 2e-12).
const CANCEL: f64 = 1e-4;

/// The weight on resource `r` of the unfrozen flows among `users` (indices into `flows`).
fn unfrozen_weight<'p>(
    r: usize,
    users: &[usize],
    frozen: &[bool],
    flows: &[usize],
    path_of: &impl Fn(usize) -> &'p [Use],
) -> f64 {
    users
        .iter()
        .filter(|&&i| !frozen[i])
        .flat_map(|&i| path_of(flows[i]).iter().filter(|u| u.resource == r).map(|u| u.weight))
        .sum()
}

/// Working arrays of [`solve`], one entry per resource, reused between calls.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    seen: Vec<bool>,
    weight: Vec<f64>,
    /// The weight when last summed from scratch (see [`CANCEL`]).
    summed: Vec<f64>,
    left: Vec<f64>,
    count: Vec<u32>,
    users: Vec<Vec<usize>>,
    /// Per call: flows frozen; resources touched, still active, full at this level.
    frozen: Vec<bool>,
    touched: Vec<usize>,
    active: Vec<usize>,
    full: Vec<usize>,
}

impl Scratch {
    /// Scratch space for `resources` resources.
    pub fn new(resources: usize) -> Self {
        let mut s = Scratch::default();
        s.resize(resources);
        s
    }

    /// Grows to `resources` entries.
    pub fn resize(&mut self, resources: usize) {
        self.seen.resize(resources, false);
        self.weight.resize(resources, 0.0);
        self.summed.resize(resources, 0.0);
        self.left.resize(resources, 0.0);
        self.count.resize(resources, 0);
        self.users.resize(resources, Vec::new());
    }
}

/// The slow, obviously-correct reference: progressive filling over all `flows` from scratch,
/// written without shortcuts. Rates in the order of `flows`.
pub fn reference(flows: &[Vec<Use>], capacity: &[f64]) -> Vec<f64> {
    let mut rate = vec![0.0; flows.len()];
    let mut active: Vec<bool> = vec![true; flows.len()];
    let mut left = capacity.to_vec();
    loop {
        // Weight of active flows on each resource.
        let mut weight = vec![0.0; capacity.len()];
        for (f, path) in flows.iter().enumerate() {
            if active[f] {
                for u in path {
                    weight[u.resource] += u.weight;
                }
            }
        }
        let inc =
            (0..capacity.len()).filter(|&r| weight[r] > 0.0).map(|r| left[r] / weight[r]).fold(f64::INFINITY, f64::min);
        if !inc.is_finite() {
            break;
        }
        for f in 0..flows.len() {
            if active[f] {
                rate[f] += inc;
            }
        }
        for r in 0..capacity.len() {
            left[r] -= inc * weight[r];
        }
        let mut any = false;
        for f in 0..flows.len() {
            if active[f] && flows[f].iter().any(|u| left[u.resource] <= 1e-12 * capacity[u.resource]) {
                active[f] = false;
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    for (f, path) in flows.iter().enumerate() {
        if path.is_empty() {
            rate[f] = f64::INFINITY;
        }
    }
    rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(resource: usize, weight: f64) -> Use {
        Use { resource, weight }
    }

    #[test]
    fn two_flows_share_a_nic_equally() {
        // 2 flows share a 10 Gbit/s NIC (1.25 bytes/ns): each gets 0.625 bytes/ns = 5 Gbit/s;
        // 100 MB then takes 1e8 / 0.625 ns = 160 ms.
        let paths = [vec![u(0, 1.0)], vec![u(0, 1.0)]];
        let r = solve(&[0, 1], |f| &paths[f], &[1.25], &mut Scratch::new(1));
        assert_eq!(r, vec![0.625, 0.625]);
        assert_eq!(1e8 / r[0], 160e6);
    }

    #[test]
    fn max_min_gives_leftover_to_the_unconstrained_flow() {
        // Resource 0 (cap 1) carries flows a and b; resource 1 (cap 3) carries b and c.
        // Level 0.5 fills resource 0 (a = b = 0.5); c then takes 3 - 0.5 = 2.5.
        let paths = vec![vec![u(0, 1.0)], vec![u(0, 1.0), u(1, 1.0)], vec![u(1, 1.0)]];
        let r = solve(&[0, 1, 2], |f| &paths[f], &[1.0, 3.0], &mut Scratch::new(2));
        assert_eq!(r, vec![0.5, 0.5, 2.5]);
        assert_eq!(reference(&paths, &[1.0, 3.0]), r);
    }

    #[test]
    fn weights_count_connections_of_a_class() {
        // A class of 4 identical hosts each sends one connection into one NIC of capacity 1:
        // weight 4 on the shared NIC, so each connection gets 0.25.
        let paths = [vec![u(0, 4.0), u(1, 1.0)]];
        assert_eq!(solve(&[0], |f| &paths[f], &[1.0, 1.0], &mut Scratch::new(2)), vec![0.25]);
    }
}
