//! The max-min solver alone: one solve of the 1,024 flows of a 64-worker, 8-shard incast, the
//! fast solver next to the plain reference it is property-tested against.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use topolab_benches::incast_paths;
use topolab_sim::maxmin::{self, Scratch};

fn maxmin(c: &mut Criterion) {
    let (paths, caps) = incast_paths();
    let all: Vec<usize> = (0..paths.len()).collect();
    let mut g = c.benchmark_group("maxmin");
    g.throughput(Throughput::Elements(paths.len() as u64));
    let mut scratch = Scratch::new(caps.len());
    g.bench_function("solve 1024 flows (64 workers x 8 PS)", |b| {
        b.iter(|| maxmin::solve(&all, |f| &paths[f], &caps, &mut scratch).iter().sum::<f64>())
    });
    g.bench_function("reference 1024 flows (64 workers x 8 PS)", |b| {
        b.iter(|| maxmin::reference(&paths, &caps).iter().sum::<f64>())
    });
    g.finish();
}

criterion_group!(benches, maxmin);
criterion_main!(benches);
