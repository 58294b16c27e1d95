// SPDX-License-Identifier: GPL-2.0

//! `rvsock-kfuzz`: a structure-aware packet fuzzer for rvsock's receive path.
//!
//! It plays the peer of the test transports of `rvsock_test_transport.ko` through
//! `/dev/rvsock_inject` (see `tools/testing/transport/inject.rs` for the ABI), with real
//! AF_VSOCK sockets of its own in every state (see [`fuzz`]).  Every choice follows from
//! `--seed`.  The exit status is 0 unless the fuzzer itself failed (no device, an ioctl
//! refused): what the kernel made of the packets is for the kernel log and the harness
//! (`tools/testing/guest/fuzz.sh`) to judge.

mod fuzz;
mod rng;
mod sys;
mod wire;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fuzz::{Config, Flood, Fuzzer, Skip, St, Stats};

const HELP: &str = "rvsock-kfuzz: packet fuzzer for rvsock's receive path.

Usage: rvsock-kfuzz [OPTIONS]

Needs rvsock.ko and rvsock_test_transport.ko loaded with a G2H and/or H2G test
transport (slots=0x2 or 0x3) and feed > 0, and root for /dev/rvsock_inject.  It
opens AF_VSOCK sockets (listeners, connects through the test transports), plays
their peer by injecting packets, and prints a summary.

Options:
  --packets N        packets to inject (default 100000)
  --seed S           seed of every random choice (default 1)
  --device PATH      the injection device (default /dev/rvsock_inject)
  --time-limit SECS  stop injecting after SECS seconds (the summary says so)
  --skip LIST        leave out classes of packets, comma-separated:
                     invalid request response rst shutdown rw credit_update
                     credit_request unknown-op lies floods flood-<kind> wrong-cid
                     bad-type big random socket-io events; flood kinds: request rst
                     credit-request tiny-rw eom overcredit response shutdown
  --calibrate N      first measure the device's own cost per packet with N
                     packets built and freed without reaching the core
  --workers N        threads calling into the sockets while packets arrive, so
                     that packets meet sockets owned by a caller (default 1;
                     0: fully sequential, the same kernel calls for a seed)
  --trace            print every injected packet on stderr
  --model-out PATH   at the end, write the connections the fuzzer knew (each got
                     a final RST), one per line: LOCAL_CID:PORT PEER_CID:PORT ...
  --progress N       a progress line (stdout and kernel log) every N packets
                     (default 10000, 0: none)
  -h, --help         this text
";

fn parse_num(opt: &str, v: Option<String>) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{opt} needs a value"))?;
    let v = v.replace('_', "");
    let r = if let Some(hex) = v.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        v.parse()
    };
    r.map_err(|_| format!("{opt}: not a number: {v}"))
}

/// Options of this program beyond the fuzzer's configuration.
struct Opts {
    calibrate: usize,
}

fn parse_args() -> Result<Option<(Config, Opts)>, String> {
    let mut opts = Opts { calibrate: 0 };
    let mut cfg = Config {
        packets: 100_000,
        seed: 1,
        device: PathBuf::from("/dev/rvsock_inject"),
        time_limit: None,
        skip: Skip::default(),
        trace: false,
        progress_every: 10_000,
        model_out: None,
        workers: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--packets" => cfg.packets = parse_num(&a, args.next())?,
            "--seed" => cfg.seed = parse_num(&a, args.next())?,
            "--device" => {
                cfg.device = args.next().ok_or("--device needs a value")?.into();
            }
            "--time-limit" => {
                cfg.time_limit = Some(Duration::from_secs(parse_num(&a, args.next())?));
            }
            "--skip" => {
                cfg.skip = Skip::parse(&args.next().ok_or("--skip needs a value")?)?;
            }
            "--trace" => cfg.trace = true,
            "--workers" => cfg.workers = parse_num(&a, args.next())?,
            "--model-out" => {
                cfg.model_out = Some(args.next().ok_or("--model-out needs a value")?.into());
            }
            "--calibrate" => opts.calibrate = parse_num(&a, args.next())? as usize,
            "--progress" => cfg.progress_every = parse_num(&a, args.next())?,
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("unknown argument {a:?} (see --help)")),
        }
    }
    Ok(Some((cfg, opts)))
}

fn per_op(counts: &[u64; 9]) -> String {
    let names = [
        "INVALID",
        "REQUEST",
        "RESPONSE",
        "RST",
        "SHUTDOWN",
        "RW",
        "CREDIT_UPDATE",
        "CREDIT_REQUEST",
        "op>7",
    ];
    names
        .iter()
        .zip(counts)
        .map(|(n, c)| format!("{n} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(cfg: &Config, f: &Fuzzer, secs: f64, kernel: Option<&wire::Info>) {
    let s: &Stats = &f.stats;
    let fuzzed = f.injected() - s.cleanup_packets;
    println!(
        "packets: {fuzzed}/{} injected in {secs:.1} s ({:.0}/s), seed {}{}",
        cfg.packets,
        fuzzed as f64 / secs.max(0.001),
        cfg.seed,
        if s.time_limited {
            " (stopped by the time limit)"
        } else {
            ""
        }
    );
    println!("injected by op: {}", per_op(&s.injected_op));
    println!(
        "injected: {} payload bytes, {} honest answers, {} len lies, {} beyond credit, {} wrong \
         CID, {} bad type, {} to random addresses, {} payloads > 64 KiB, {} final RSTs",
        s.payload_bytes,
        s.reactions,
        s.len_lies,
        s.overcredit,
        s.wrong_cid,
        s.bad_type,
        s.random,
        s.big,
        s.cleanup_packets
    );
    println!(
        "device events: {} transport resets, {} local CID changes",
        s.resets, s.cid_changes
    );
    println!(
        "floods: {} packets; {}",
        s.flood_packets,
        Flood::NAMES
            .iter()
            .zip(s.floods)
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "core sent by op: {}; feed headers lost: {}",
        per_op(&s.core_op),
        s.feed_lost
    );
    println!(
        "sockets: {} listeners, {} connects, {} children made by the core, {} accepted, {} \
         closed, {} shutdowns; connections entering each state: {}; at most {} connections \
         known and {} descriptors open",
        s.listeners,
        s.connects,
        s.children,
        s.accepted,
        s.closed,
        s.shutdowns,
        St::NAMES
            .iter()
            .zip(s.entered)
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.max_endpoints,
        s.max_fds
    );
    println!(
        "socket I/O: {} reads ({} bytes, {} EOF), {} writes ({} bytes)",
        s.reads, s.read_bytes, s.eof, s.writes, s.write_bytes
    );
    let w = &s.worker;
    println!(
        "concurrent socket calls: {} ({} reads of {} bytes, {} writes of {} bytes, {} accepts); \
         errors: {}",
        w.calls,
        w.reads,
        w.read_bytes,
        w.writes,
        w.write_bytes,
        w.accepts,
        w.errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "socket call errors: {}",
        if s.errors.is_empty() {
            "none".to_string()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "time: {:.1} s injecting, {:.1} s reading the feed, {:.1} s in socket calls, {:.1} s \
         generating",
        s.secs[0], s.secs[1], s.secs[2], s.secs[3]
    );
    if let Some(k) = kernel {
        println!(
            "device: {} packets injected, {} dropped for want of memory, {} sent by the core",
            k.injected, k.failed, k.sent
        );
    }
}

fn main() -> ExitCode {
    let (cfg, opts) = match parse_args() {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rvsock-kfuzz: {e}");
            return ExitCode::from(2);
        }
    };
    let mut f = match Fuzzer::new(cfg.clone()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rvsock-kfuzz: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "rvsock-kfuzz: seed {}, {} packets, transports (slot, local CID): {:?}",
        cfg.seed,
        cfg.packets,
        f.transports()
    );
    if opts.calibrate > 0 {
        match f.calibrate(opts.calibrate) {
            Ok(us) => println!(
                "device cost: {us:.1} us per packet ({} packets built and freed, not handed to \
                 the core)",
                opts.calibrate
            ),
            Err(e) => {
                eprintln!("rvsock-kfuzz: calibration: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let t0 = Instant::now();
    let r = f.run();
    let secs = t0.elapsed().as_secs_f64();
    let info = f.info().ok();
    summary(&cfg, &f, secs, info.as_ref());
    match r {
        Ok(()) => {
            println!("result: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("result: fuzzer failed: {e}");
            ExitCode::FAILURE
        }
    }
}
