//! The wire protocol: length-delimited frames over TCP and a versioned, authenticated handshake.
//!
//! A frame is a 26-byte little-endian header — kind (u8), reserved (u8), variable (u32),
//! step (u64), payload length (u32), send time (u64, CLOCK_MONOTONIC ns, for latency
//! emulation) — and the payload. Tensors travel as raw little-endian
//! `f32`, copied in one piece, never serialized element by element. The payload length is
//! checked against a hard cap **before** anything is allocated, so a malformed or hostile
//! header cannot make a peer allocate gigabytes. Every read has a timeout.
//!
//! Handshake: the server sends `Hello` (protocol version, a random 32-byte nonce); the client
//! answers `Auth` (its version, HMAC-SHA256 of the nonce under the job's token); the server
//! checks both in constant time and answers `Accept`, or logs the refusal and closes.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version; peers with another version are refused.
pub const VERSION: u16 = 2;
/// Header size in bytes.
pub const HEADER: usize = 26;
/// Default cap on a frame's payload (256 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 256 << 20;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Server -> client: version and nonce.
    Hello = 1,
    /// Client -> server: version and HMAC of the nonce; `var` carries the client's task index.
    Auth = 2,
    /// Server -> client: authenticated.
    Accept = 3,
    /// Worker -> shard: send me your parts for `step`.
    Pull = 4,
    /// Shard -> worker: the values of part `var` for `step`.
    Value = 5,
    /// Worker -> shard: the gradient of part `var` computed in `step`.
    Push = 6,
    /// Worker -> shard: this worker has finished.
    Done = 7,
    /// Shard -> worker: the gradient of part `var` of `step` was applied (async modes).
    Applied = 8,
    /// Shard -> worker: the shard is ready to serve `step` (sync: the previous step is applied).
    Ready = 9,
    /// Worker -> shard (sync modes): released into `step`, send me your parts' values (no Ready).
    Fetch = 10,
    /// All-reduce rank -> coordinator: `var` gradients of `step` (in backward order) are ready
    /// here.
    Report = 11,
    /// All-reduce coordinator -> rank: reduce the gradients `var..end` of `step` as one bucket
    /// (`end` a little-endian u32 payload).
    Bucket = 12,
}

/// `var` of a `Pull` that asks only for the `Ready` of a step (the barrier after the last step).
pub const BARRIER_ONLY: u32 = u32::MAX;

/// CLOCK_MONOTONIC in ns: one clock for every process on the machine, network namespaces
/// included.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Auth,
            3 => Kind::Accept,
            4 => Kind::Pull,
            5 => Kind::Value,
            6 => Kind::Push,
            7 => Kind::Done,
            8 => Kind::Applied,
            9 => Kind::Ready,
            10 => Kind::Fetch,
            11 => Kind::Report,
            12 => Kind::Bucket,
            _ => return None,
        })
    }
}

/// A frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Kind.
    pub kind: Kind,
    /// Variable part (or task index in `Auth`).
    pub var: u32,
    /// Step.
    pub step: u64,
    /// Payload.
    pub payload: Vec<u8>,
    /// When the sender wrote it (CLOCK_MONOTONIC ns).
    pub sent_ns: u64,
}

impl Frame {
    /// Waits until `latency_ns` after the frame was sent: emulates one-way latency in the
    /// transport where the kernel has no `netem`.
    pub async fn release(&self, latency_ns: u64) {
        if latency_ns == 0 {
            return;
        }
        sleep_until_monotonic(self.sent_ns + latency_ns).await;
    }
}

/// Sleeps until CLOCK_MONOTONIC reads `due_ns`, to the microsecond: tokio's timer ticks in
/// whole milliseconds, so a 200 us latency slept with it takes 1-2 ms (a ring pays it in
/// every round). A timerfd armed at the absolute time wakes the task through the reactor;
/// where one cannot be made, tokio's timer does.
pub async fn sleep_until_monotonic(due_ns: u64) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let now = monotonic_ns();
    if due_ns <= now {
        return;
    }
    // SAFETY: timerfd_create takes no pointers; a negative result is handled.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    let armed = (fd >= 0).then(|| {
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (due_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (due_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` lives across the call; the old value is not asked for (null).
        let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        (rc == 0).then_some(fd)
    });
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same until it is dropped.
    let registered = armed
        .flatten()
        .map(|fd| unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) });
    if let Some(Ok(afd)) = registered {
        loop {
            let Ok(mut guard) = afd.readable().await else { break };
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into the 8-byte buffer.
            let n = unsafe { libc::read(afd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
            if n == 8 {
                return;
            }
            guard.clear_ready();
        }
    }
    let now = monotonic_ns();
    if due_ns > now {
        tokio::time::sleep(Duration::from_nanos(due_ns - now)).await;
    }
}

/// Why a frame could not be read or a peer was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A read took longer than its timeout.
    #[error("timed out after {0:?} waiting for a frame")]
    Timeout(Duration),
    /// The header announced more than the cap.
    #[error("frame of {len} bytes exceeds the cap of {cap} bytes")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// Cap.
        cap: u32,
    },
    /// Unknown kind byte.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}, this is version {VERSION}")]
    Version(u16),
    /// The peer's HMAC does not match the job token.
    #[error("peer failed authentication (wrong job token)")]
    BadToken,
    /// Something other than the expected frame arrived.
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected {
        /// Expected kind.
        expected: Kind,
        /// Received kind.
        got: Kind,
    },
}

/// Parses a header: (kind, var, step, length, sent_ns). Checks the kind and the cap.
pub fn parse_header(h: &[u8; HEADER], cap: u32) -> Result<(Kind, u32, u64, u32, u64), WireError> {
    let kind = Kind::from_u8(h[0]).ok_or(WireError::BadKind(h[0]))?;
    let var = u32::from_le_bytes(h[2..6].try_into().expect("4 bytes"));
    let step = u64::from_le_bytes(h[6..14].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(h[14..18].try_into().expect("4 bytes"));
    let sent = u64::from_le_bytes(h[18..26].try_into().expect("8 bytes"));
    if len > cap {
        return Err(WireError::TooLarge { len, cap });
    }
    Ok((kind, var, step, len, sent))
}

/// Encodes a header stamped with the current monotonic time.
pub fn header(kind: Kind, var: u32, step: u64, len: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = kind as u8;
    h[2..6].copy_from_slice(&var.to_le_bytes());
    h[6..14].copy_from_slice(&step.to_le_bytes());
    h[14..18].copy_from_slice(&len.to_le_bytes());
    h[18..26].copy_from_slice(&monotonic_ns().to_le_bytes());
    h
}

/// Reads one frame within `timeout`, refusing payloads over `cap` before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, cap: u32, timeout: Duration) -> Result<Frame, WireError> {
    let read = async {
        let mut h = [0u8; HEADER];
        r.read_exact(&mut h).await?;
        let (kind, var, step, len, sent_ns) = parse_header(&h, cap)?;
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).await?;
        Ok(Frame { kind, var, step, payload, sent_ns })
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| WireError::Timeout(timeout))?
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    var: u32,
    step: u64,
    payload: &[u8],
) -> Result<(), WireError> {
    let len = u32::try_from(payload.len()).map_err(|_| WireError::TooLarge { len: u32::MAX, cap: u32::MAX })?;
    // One buffer, one write: header and payload leave together.
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(&header(kind, var, step, len));
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    Ok(())
}

/// f32 values as little-endian bytes: one memory copy on little-endian machines.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: any f32 bit pattern is a valid sequence of 4 bytes; u8 has alignment 1.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }.to_vec()
    }
    #[cfg(not(target_endian = "little"))]
    {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
}

/// Little-endian bytes as f32 values (a trailing partial value is an error).
pub fn bytes_f32(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    #[cfg(target_endian = "little")]
    {
        let mut out = vec![0f32; b.len() / 4];
        // SAFETY: `out` has exactly b.len() bytes of storage; every bit pattern is a valid f32.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), out.as_mut_ptr().cast::<u8>(), b.len()) };
        Some(out)
    }
    #[cfg(not(target_endian = "little"))]
    {
        Some(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
    }
}

/// A job's shared secret.
#[derive(Clone)]
pub struct Token(pub Vec<u8>);

impl Token {
    /// A fresh random token.
    pub fn random() -> Token {
        let mut t = vec![0u8; 32];
        getrandom::fill(&mut t).expect("the OS random source works");
        Token(t)
    }
    /// Hex text.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// From hex text.
    pub fn from_hex(s: &str) -> Option<Token> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(Token)
    }
    fn mac(&self, nonce: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(nonce);
        m
    }
}

/// Server side of the handshake: returns the client's task index.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    token: &Token,
    timeout: Duration,
) -> Result<u32, WireError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).expect("the OS random source works");
    let mut hello = VERSION.to_le_bytes().to_vec();
    hello.extend_from_slice(&nonce);
    write_frame(s, Kind::Hello, 0, 0, &hello).await?;
    let f = read_frame(s, 64, timeout).await?;
    if f.kind != Kind::Auth {
        return Err(WireError::Unexpected { expected: Kind::Auth, got: f.kind });
    }
    if f.payload.len() != 2 + 32 {
        return Err(WireError::BadToken);
    }
    let version = u16::from_le_bytes([f.payload[0], f.payload[1]]);
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    // Constant-time comparison.
    token.mac(&nonce).verify_slice(&f.payload[2..]).map_err(|_| WireError::BadToken)?;
    write_frame(s, Kind::Accept, 0, 0, &[]).await?;
    Ok(f.var)
}

/// Client side of the handshake, announcing task `index`.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    token: &Token,
    index: u32,
    timeout: Duration,
) -> Result<(), WireError> {
    let f = read_frame(s, 64, timeout).await?;
    if f.kind != Kind::Hello {
        return Err(WireError::Unexpected { expected: Kind::Hello, got: f.kind });
    }
    if f.payload.len() != 34 {
        return Err(WireError::BadKind(f.kind as u8));
    }
    let version = u16::from_le_bytes([f.payload[0], f.payload[1]]);
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let mut auth = VERSION.to_le_bytes().to_vec();
    auth.extend_from_slice(&token.mac(&f.payload[2..]).finalize().into_bytes());
    write_frame(s, Kind::Auth, index, 0, &auth).await?;
    let f = read_frame(s, 0, timeout).await?;
    if f.kind != Kind::Accept {
        return Err(WireError::Unexpected { expected: Kind::Accept, got: f.kind });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn emulated_latency_is_kept_to_the_microsecond_not_the_millisecond() {
        // tokio's timer would round 300 us up to the next millisecond tick (1-2 ms): the
        // median of 21 waits stays below 1 ms, and no wait ends early.
        rt().block_on(async {
            let mut late: Vec<u64> = Vec::new();
            for _ in 0..21 {
                let due = monotonic_ns() + 300_000;
                sleep_until_monotonic(due).await;
                let now = monotonic_ns();
                assert!(now >= due, "woke {} ns early", due - now);
                late.push(now - due);
            }
            late.sort_unstable();
            assert!(late[10] < 700_000, "median lateness {} ns", late[10]);
        });
    }

    #[test]
    fn frames_round_trip() {
        rt().block_on(async {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let values = [1.5f32, -2.0, 3.25];
            write_frame(&mut a, Kind::Push, 7, 42, &f32_bytes(&values)).await.unwrap();
            let f = read_frame(&mut b, 1024, Duration::from_secs(1)).await.unwrap();
            assert_eq!((f.kind, f.var, f.step), (Kind::Push, 7, 42));
            assert_eq!(bytes_f32(&f.payload).unwrap(), values);
        });
    }

    #[test]
    fn an_oversized_frame_is_refused_before_allocating() {
        // A header announcing 4 GiB - 1 with a cap of 1 KiB: refused from the header alone.
        let h = header(Kind::Value, 0, 0, u32::MAX);
        assert!(matches!(parse_header(&h, 1024), Err(WireError::TooLarge { len: u32::MAX, cap: 1024 })));
    }

    #[test]
    fn release_waits_for_the_emulated_latency() {
        rt().block_on(async {
            let (mut a, mut b) = tokio::io::duplex(1 << 12);
            write_frame(&mut a, Kind::Ready, 0, 1, &[]).await.unwrap();
            let f = read_frame(&mut b, 0, Duration::from_secs(1)).await.unwrap();
            f.release(20_000_000).await;
            assert!(monotonic_ns() >= f.sent_ns + 20_000_000);
        });
    }

    #[test]
    fn handshake_accepts_the_right_token_and_refuses_a_wrong_one() {
        rt().block_on(async {
            let good = Token::random();
            let bad = Token::random();
            for (client_token, ok) in [(good.clone(), true), (bad, false)] {
                let (mut a, mut b) = tokio::io::duplex(1 << 12);
                let server_token = good.clone();
                let server = tokio::spawn(async move { accept(&mut a, &server_token, Duration::from_secs(1)).await });
                let client = connect(&mut b, &client_token, 3, Duration::from_secs(1)).await;
                let served = server.await.unwrap();
                if ok {
                    assert_eq!(served.unwrap(), 3);
                    client.unwrap();
                } else {
                    assert!(matches!(served, Err(WireError::BadToken)));
                    assert!(client.is_err());
                }
            }
        });
    }

    #[test]
    fn a_silent_peer_times_out() {
        rt().block_on(async {
            let (_a, mut b) = tokio::io::duplex(64);
            let e = read_frame(&mut b, 64, Duration::from_millis(20)).await.unwrap_err();
            assert!(matches!(e, WireError::Timeout(_)));
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(0x7090_1ab5), ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the reader and never allocate past the cap.
        #[test]
        fn malformed_or_truncated_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), cap in 0u32..32) {
            let res = rt().block_on(async {
                let mut r = bytes.as_slice();
                read_frame(&mut r, cap, Duration::from_millis(50)).await
            });
            if let Ok(f) = res {
                prop_assert!(f.payload.len() <= cap as usize);
                prop_assert!(bytes.len() >= HEADER + f.payload.len());
            }
        }
    }
}
