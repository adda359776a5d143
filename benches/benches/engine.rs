//! The event engine alone: schedule and pop, with a queue of 1024 pending events (about what
//! a 64-worker run keeps in flight). Target: >= 20 M events/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: u64 = 1_000_000;

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("schedule+pop 1M events, 1024 pending", |b| {
        b.iter(|| topolab_benches::event_queue_workload(EVENTS, 1024))
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
