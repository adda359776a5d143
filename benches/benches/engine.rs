//! The event engine alone: schedule and pop, with a queue of 1024 pending events (about what
//! a 64-worker run keeps in flight). Target: >= 20 M events/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use topolab_core::units::Time;
use topolab_sim::engine::EventQueue;

const EVENTS: u64 = 1_000_000;

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("schedule+pop 1M events, 1024 pending", |b| {
        b.iter(|| {
            let mut q: EventQueue<u64> = EventQueue::new();
            let mut x: u64 = 0x9E37_79B9;
            for i in 0..1024 {
                q.schedule(Time(i), i);
            }
            let mut n = 0;
            while let Some((t, e)) = q.pop() {
                n += 1;
                if n + 1024 <= EVENTS {
                    // xorshift: pseudo-random delays of 0..4095 ns.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    q.schedule(t + Time(x & 4095), e);
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
