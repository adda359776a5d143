//! The runtime's transport: goodput of 100 MB of tensors on loopback, per-message overhead of
//! small tensors, and (as root) push goodput across a virtual link shaped to 1 Gbit/s.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::net::{TcpListener, TcpStream};
use topolab_core::units::{BitRate, Time};
use topolab_runtime::wire::{self, Kind};

const TENSOR: usize = 4 << 20; // 4 MiB tensors
const TOTAL: usize = 100_000_000;

/// Sends `count` frames of `payload` bytes from a client to a server over TCP; returns when the
/// server has read them all.
async fn transfer(addr: std::net::SocketAddr, listener: Option<TcpListener>, count: usize, payload: usize) {
    let server = tokio::spawn(async move {
        let l = match listener {
            Some(l) => l,
            None => TcpListener::bind(addr).await.unwrap(),
        };
        let (mut s, _) = l.accept().await.unwrap();
        for _ in 0..count {
            wire::read_frame(&mut s, payload as u32, Duration::from_secs(30)).await.unwrap();
        }
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let data = wire::f32_bytes(&vec![1.0f32; payload / 4]);
    for i in 0..count {
        wire::write_frame(&mut c, Kind::Push, i as u32, 0, &data).await.unwrap();
    }
    server.await.unwrap();
}

fn loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("transport");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("loopback 100 MB in 4 MiB tensors", |b| {
        b.iter(|| {
            rt.block_on(async {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                transfer(addr, Some(l), TOTAL / TENSOR, TENSOR).await;
            })
        })
    });
    let small = 1000;
    g.throughput(Throughput::Elements(small as u64));
    g.bench_function("loopback 1000 frames of 256 B (per-message overhead)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                transfer(addr, Some(l), small, 256).await;
            })
        })
    });
    g.finish();
}

fn shaped(c: &mut Criterion) {
    if !topolab_runtime::netns::is_root() {
        eprintln!("transport/netns: skipped (needs root)");
        return;
    }
    let cluster = topolab_runtime::netns::VirtualCluster::create(
        &format!("{}-bench", std::process::id()),
        2,
        BitRate(1e9),
        Time::ZERO,
    )
    .unwrap();
    let mut g = c.benchmark_group("transport");
    g.sample_size(10);
    let bytes = 125_000_000usize; // 1 s at 1 Gbit/s
    g.throughput(Throughput::Bytes(bytes as u64));
    let addr: std::net::SocketAddr = format!("{}:5301", cluster.addrs[1]).parse().unwrap();
    g.bench_function("netns push goodput, link shaped to 1 Gbit/s", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                std::thread::scope(|s| {
                    let server = s.spawn(|| {
                        cluster.enter(1).unwrap();
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                        rt.block_on(async {
                            let l = TcpListener::bind(addr).await.unwrap();
                            let (mut conn, _) = l.accept().await.unwrap();
                            for _ in 0..bytes / TENSOR {
                                wire::read_frame(&mut conn, TENSOR as u32, Duration::from_secs(30)).await.unwrap();
                            }
                        })
                    });
                    std::thread::sleep(Duration::from_millis(50));
                    s.spawn(|| {
                        cluster.enter(0).unwrap();
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                        rt.block_on(async {
                            let mut conn = TcpStream::connect(addr).await.unwrap();
                            let data = wire::f32_bytes(&vec![1.0f32; TENSOR / 4]);
                            for i in 0..bytes / TENSOR {
                                wire::write_frame(&mut conn, Kind::Push, i as u32, 0, &data).await.unwrap();
                            }
                        })
                    });
                    server.join().unwrap();
                });
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, loopback, shaped);
criterion_main!(benches);
