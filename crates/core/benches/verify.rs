//! What verifying a delivery costs next to the HMAC it cannot avoid.
//!
//! For 1 KiB, 64 KiB and 1 MiB bodies: `raw_hmac` keys an HMAC-SHA256 and runs it over the
//! prefix and the body (the floor for any verifier), `verify` runs the crate's `verify` on a
//! hex header value. The goal is `verify` within 1.1x of `raw_hmac`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use preservica_webhook_core::{SIGNATURE_PREFIX, Secret, sign, verify};
use sha2::Sha256;

const KEY: &str = "my_shared_secret";

fn bench_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    let secret = Secret::new(KEY).unwrap();
    for size in [1024usize, 64 * 1024, 1024 * 1024] {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let header = sign(&secret, &body).to_hex();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw_hmac", size), &body, |b, body| {
            b.iter(|| {
                let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
                mac.update(SIGNATURE_PREFIX.as_bytes());
                mac.update(black_box(body));
                black_box(mac.finalize().into_bytes())
            });
        });
        group.bench_with_input(BenchmarkId::new("verify", size), &body, |b, body| {
            b.iter(|| {
                verify(
                    std::slice::from_ref(&secret),
                    black_box(body),
                    Some(black_box(&header)),
                )
                .unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
