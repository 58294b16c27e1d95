// SPDX-License-Identifier: GPL-2.0

//! End-to-end runs of the tools over TCP (127.0.0.1) and AF_UNIX: the same code paths as over
//! AF_VSOCK except for the socket calls, which the host running `cargo test` may not have.
//! Every process gets `--deadline`, so a bug cannot hang the test run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

const DEADLINE: &str = "60";

fn bin(name: &str) -> Command {
    let path = match name {
        "vsock-echo-server" => env!("CARGO_BIN_EXE_vsock-echo-server"),
        "vsock-echo-client" => env!("CARGO_BIN_EXE_vsock-echo-client"),
        "vsock-pingpong" => env!("CARGO_BIN_EXE_vsock-pingpong"),
        "vsock-stream-bench" => env!("CARGO_BIN_EXE_vsock-stream-bench"),
        "vsock-connrate" => env!("CARGO_BIN_EXE_vsock-connrate"),
        "vsock-pairs" => env!("CARGO_BIN_EXE_vsock-pairs"),
        _ => panic!("unknown tool {name}"),
    };
    let mut c = Command::new(path);
    c.args(["--deadline", DEADLINE]);
    c
}

/// Held (shared) while a test starts a process, and exclusively while a test briefly has a
/// listening socket it means to close: a child forked meanwhile would inherit the listener until
/// its exec and keep accepting connections.
static FORKS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn forking() -> std::sync::RwLockReadGuard<'static, ()> {
    FORKS.read().unwrap_or_else(|e| e.into_inner())
}

fn temp_sock(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "rvsock-tools-{tag}-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A running server, and the `--tcp`/`--unix` arguments that reach it.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: Vec<String>,
}

/// Starts `tool --server-args... <transport>` and waits for its `listening on` line.
/// `unix` chooses AF_UNIX (a fresh path) over TCP (an ephemeral port on 127.0.0.1).
fn start_server(tool: &str, args: &[&str], unix: bool) -> Server {
    let listen: Vec<String> = if unix {
        vec!["--unix".into(), temp_sock(tool).display().to_string()]
    } else {
        vec!["--tcp".into(), "127.0.0.1:0".into()]
    };
    let _forking = forking();
    let mut child = bin(tool)
        .args(args)
        .args(&listen)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the server's first line");
    let bound = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from {tool}: {line:?}"));
    let addr = match bound.split_once(' ') {
        Some(("tcp", a)) => vec!["--tcp".into(), a.to_string()],
        Some(("unix", p)) => vec!["--unix".into(), p.to_string()],
        _ => panic!("unexpected listening line {line:?}"),
    };
    Server {
        child,
        stdout,
        addr,
    }
}

impl Server {
    /// Waits for the server to exit (it was started with --once or --count) and returns its
    /// remaining stdout.
    fn finish(mut self) -> String {
        let mut rest = String::new();
        for line in (&mut self.stdout).lines() {
            rest.push_str(&line.expect("server stdout"));
            rest.push('\n');
        }
        let status = self.child.wait().expect("wait for the server");
        assert!(status.success(), "server failed: {status}; stdout: {rest}");
        rest
    }
}

fn run(tool: &str, args: &[&str], addr: &[String]) -> Output {
    let _forking = forking();
    bin(tool)
        .args(args)
        .args(addr)
        .stdin(Stdio::null())
        .output()
        .expect("run the client")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status {}; stdout: {stdout}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number after `"key":` in a one-line JSON object.
fn json_num(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let num: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    num.parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

fn echo(unix: bool) {
    let s = start_server("vsock-echo-server", &["--accept-timeout", "20"], unix);
    let out = ok(&run("vsock-echo-client", &["hello there"], &s.addr));
    assert_eq!(out, "received: hello there\n");
    let out = ok(&run(
        "vsock-echo-client",
        &["--size", "300K", "--count", "3"],
        &s.addr,
    ));
    assert!(
        out.starts_with("echo ok: 3 round(s), 921600 bytes"),
        "{out}"
    );
    // Stop the server: kill it (it would exit after --accept-timeout otherwise).
    let mut s = s;
    s.child.kill().expect("kill the echo server");
    let _ = s.child.wait();
    if unix {
        let _ = std::fs::remove_file(&s.addr[1]);
    }
}

#[test]
fn echo_tcp() {
    echo(false);
}

#[test]
fn echo_unix() {
    echo(true);
}

#[test]
fn echo_once_and_stdin() {
    let s = start_server("vsock-echo-server", &["--once"], true);
    let forking = forking();
    let mut client = bin("vsock-echo-client")
        .args(&s.addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    drop(forking);
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().expect("piped stdin");
        stdin.write_all(b"from stdin\n").expect("write stdin");
    }
    let out = ok(&client.wait_with_output().expect("client output"));
    assert_eq!(out, "received: from stdin\n");
    let rest = s.finish();
    assert!(rest.starts_with("accepted connection from "), "{rest}");
}

fn pingpong(unix: bool, size: &str) {
    let s = start_server("vsock-pingpong", &["--server", "--once"], unix);
    let out = ok(&run(
        "vsock-pingpong",
        &[
            "--size",
            size,
            "--iterations",
            "500",
            "--warmup",
            "50",
            "--json",
        ],
        &s.addr,
    ));
    assert_eq!(json_num(&out, "iterations"), 500.0);
    let (min, med, p99, max) = (
        json_num(&out, "min_us"),
        json_num(&out, "median_us"),
        json_num(&out, "p99_us"),
        json_num(&out, "max_us"),
    );
    assert!(0.0 < min && min <= med && med <= p99 && p99 <= max, "{out}");
    s.finish();
}

#[test]
fn pingpong_tcp_64() {
    pingpong(false, "64");
}

#[test]
fn pingpong_unix_4096() {
    pingpong(true, "4096");
}

#[test]
fn pingpong_text_report() {
    let s = start_server("vsock-pingpong", &["--server", "--once"], false);
    let out = ok(&run(
        "vsock-pingpong",
        &["--iterations", "100", "--warmup", "0"],
        &s.addr,
    ));
    assert!(out.contains("round trip (us): min "), "{out}");
    s.finish();
}

fn stream_bench(unix: bool) {
    let s = start_server("vsock-stream-bench", &["--server", "--once"], unix);
    let out = ok(&run(
        "vsock-stream-bench",
        &[
            "--bytes",
            "64M",
            "--buf-size",
            "32K",
            "--streams",
            "3",
            "--json",
        ],
        &s.addr,
    ));
    assert_eq!(json_num(&out, "bytes"), (64u64 << 20) as f64, "{out}");
    assert_eq!(json_num(&out, "streams"), 3.0);
    assert!(json_num(&out, "gbit_per_s") > 0.0, "{out}");
    assert_eq!(out.matches("\"server_elapsed_s\"").count(), 3, "{out}");
    let rest = s.finish();
    assert!(
        rest.contains(&format!("received {} bytes on 3", 64u64 << 20)),
        "{rest}"
    );
}

#[test]
fn stream_bench_tcp() {
    stream_bench(false);
}

#[test]
fn stream_bench_unix() {
    stream_bench(true);
}

#[test]
fn connrate_unix() {
    let s = start_server("vsock-connrate", &["--server", "--count", "300"], true);
    let out = ok(&run(
        "vsock-connrate",
        &["--count", "300", "--json"],
        &s.addr,
    ));
    assert_eq!(json_num(&out, "connections"), 300.0, "{out}");
    assert_eq!(json_num(&out, "refused"), 0.0, "{out}");
    let rest = s.finish();
    assert!(rest.starts_with("accepted 300 connections"), "{rest}");
}

#[test]
fn connrate_tcp_wait_close() {
    let s = start_server("vsock-connrate", &["--server", "--count", "200"], false);
    let out = ok(&run(
        "vsock-connrate",
        &["--count", "200", "--wait-close"],
        &s.addr,
    ));
    assert!(out.contains(": 200 connections in "), "{out}");
    s.finish();
}

#[test]
fn connrate_counts_refused() {
    // A socket file nobody listens on: every attempt is refused, the loop goes on.
    let path = temp_sock("refused");
    {
        let _no_forks = FORKS.write().unwrap_or_else(|e| e.into_inner());
        let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        drop(l);
    }
    let p = path.display().to_string();
    let out = run("vsock-connrate", &["--count", "50", "--unix", &p], &[]);
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("attempts=50 refused=50"), "{stdout}");
}

#[test]
fn connrate_flood_unix() {
    // A small backlog that the two client loops fill during the server's accept delay; a full
    // AF_UNIX backlog makes connect wait, so the short --timeout turns those into timeouts.
    let s = start_server(
        "vsock-connrate",
        &[
            "--server",
            "--flood",
            "--backlog",
            "4",
            "--accept-delay",
            "0.2",
            "--duration",
            "0.5",
            "--work-us",
            "10",
            "--nap",
            "1ms",
            "--json",
        ],
        true,
    );
    let out = ok(&run(
        "vsock-connrate",
        &[
            "--flood",
            "--threads",
            "2",
            "--warmup",
            "0.2",
            "--duration",
            "0.5",
            "--timeout",
            "20ms",
            "--json",
        ],
        &s.addr,
    ));
    let n = |k: &str| json_num(&out, k);
    assert!(n("connections") > 0.0, "{out}");
    assert_eq!(
        n("attempts"),
        n("connections") + n("refused") + n("reset") + n("timedout") + n("errors"),
        "{out}"
    );
    assert_eq!(n("slots"), 5.0, "{out}");
    assert_eq!(n("threads"), 2.0, "{out}");
    let rest = s.finish();
    assert!(json_num(&rest, "accepted") > 0.0, "{rest}");
    assert_eq!(json_num(&rest, "short_reads"), 0.0, "{rest}");
    assert_eq!(json_num(&rest, "read_errors"), 0.0, "{rest}");
    assert_eq!(json_num(&rest, "work_us"), 10.0, "{rest}");
    assert!(json_num(&rest, "work_rounds") > 0.0, "{rest}");
}

#[test]
fn connrate_flood_usage() {
    for args in [
        &["--flood", "--count", "5"][..],
        &["--flood", "--wait-close"][..],
        &["--flood", "--threads", "0"][..],
        &["--threads", "2"][..],
    ] {
        let out = run("vsock-connrate", args, &["--tcp".into(), "1".into()]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn pairs_tcp_and_unix() {
    let out = ok(&run(
        "vsock-pairs",
        &["--count", "200", "--hold", "0", "--exchange"],
        &["--tcp".into(), "127.0.0.1:0".into()],
    ));
    assert_eq!(out, "ready 200\n");
    let p = temp_sock("pairs").display().to_string();
    let out = ok(&run("vsock-pairs", &["--count", "300", "--unix", &p], &[]));
    // stdin is /dev/null: end of file right away, so it closes after "ready".
    assert_eq!(out, "ready 300\n");
}

#[test]
fn usage_errors_exit_2() {
    for (tool, args) in [
        ("vsock-pingpong", &["--size", "0"][..]),
        ("vsock-stream-bench", &["--tcp", "1", "--unix", "x"][..]),
        ("vsock-echo-client", &["--bogus"][..]),
        ("vsock-connrate", &["--json=yes"][..]),
        ("vsock-pairs", &["--count", "x"][..]),
    ] {
        let out = run(tool, args, &[]);
        assert_eq!(out.status.code(), Some(2), "{tool} {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error: ") && err.contains("--help"), "{err}");
    }
}

#[test]
fn help_documents_options() {
    for tool in [
        "vsock-echo-server",
        "vsock-echo-client",
        "vsock-pingpong",
        "vsock-stream-bench",
        "vsock-connrate",
        "vsock-pairs",
    ] {
        let out = ok(&run(tool, &["--help"], &[]));
        for opt in ["--cid", "--port", "--tcp", "--unix", "--timeout", "Usage: "] {
            assert!(out.contains(opt), "{tool} --help lacks {opt}");
        }
    }
}

#[test]
fn deadline_ends_a_hung_run() {
    // A server nobody connects to, with no accept timeout: only --deadline ends it.
    let p = temp_sock("deadline").display().to_string();
    let start = std::time::Instant::now();
    let _forking = forking();
    let out = Command::new(env!("CARGO_BIN_EXE_vsock-echo-server"))
        .args(["--unix", &p, "--accept-timeout", "0", "--deadline", "0.3"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(124));
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    let _ = std::fs::remove_file(&p);
}
