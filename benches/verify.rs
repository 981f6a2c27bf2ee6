//! Signature verification cost for 1 KiB and 64 KiB bodies, next to the SHA-256 floor (the
//! `sha2` hash alone of the same bytes, and OpenSSL's) measured in the same run. As on the request path, the
//! body is moved into the verifier (no reference count is touched) and the verified request
//! is dropped outside the timed part, where the request path drops it after forwarding.
//!
//!     cargo bench --bench verify

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use hookgate::config::Secret;
use hookgate::verify::{sign, HmacSha256Verifier, Verifier};
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for size in [1024usize, 64 * 1024] {
        let body = Bytes::from(vec![0x5au8; size]);
        let secret = "whsec_bench_secret";
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-webhook-signature",
            sign(secret.as_bytes(), &body).parse().unwrap(),
        );
        let verifier = HmacSha256Verifier::new(
            HeaderName::from_static("x-webhook-signature"),
            &[Secret::new("whsec_rotated_out"), Secret::new(secret)],
        );
        let single = HmacSha256Verifier::new(
            HeaderName::from_static("x-webhook-signature"),
            &[Secret::new(secret)],
        );
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("sha256_floor", size), &body, |b, body| {
            b.iter(|| Sha256::digest(body))
        });
        // A second floor: OpenSSL's SHA-256 (the library the TLS listener already links).
        group.bench_with_input(
            BenchmarkId::new("sha256_floor_openssl", size),
            &body,
            |b, body| b.iter(|| openssl::sha::sha256(body)),
        );
        group.bench_with_input(
            BenchmarkId::new("hmac_sha256_one_secret", size),
            &body,
            |b, body| {
                b.iter_batched(
                    || body.clone(),
                    |body| single.verify(&headers, body).unwrap(),
                    BatchSize::SmallInput,
                )
            },
        );
        group.bench_with_input(
            BenchmarkId::new("hmac_sha256_second_of_two", size),
            &body,
            |b, body| {
                b.iter_batched(
                    || body.clone(),
                    |body| verifier.verify(&headers, body).unwrap(),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
