// SPDX-License-Identifier: GPL-2.0

//! Command-line parsing: a small `--long value` / `--long=value` parser, size and duration
//! parsing, and the options every tool shares (transport selection, timeouts).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Display;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{start_watchdog, Error, Result};
use crate::net::Target;
use crate::vsock::{
    SockType, VsockAddr, VMADDR_CID_ANY, VMADDR_CID_HOST, VMADDR_CID_HYPERVISOR, VMADDR_CID_LOCAL,
    VMADDR_PORT_ANY,
};

/// One command-line item.
#[derive(Debug, PartialEq, Eq)]
pub enum Arg {
    /// An option, with its dashes: `--size`, `-h`.
    Opt(String),
    /// A positional argument.
    Value(String),
}

/// A command-line parser: options are `--name`, `--name value`, `--name=value` or `-x`;
/// `--` ends the options.
#[derive(Debug)]
pub struct Parser {
    args: VecDeque<String>,
    inline: Option<String>,
    current: String,
    only_values: bool,
}

impl Parser {
    /// Parses `args` (without the program name).
    pub fn new(args: impl IntoIterator<Item = OsString>) -> Result<Parser> {
        let args = args
            .into_iter()
            .map(|a| {
                a.into_string()
                    .map_err(|a| Error::usage(format!("argument {a:?} is not valid UTF-8")))
            })
            .collect::<Result<VecDeque<String>>>()?;
        Ok(Parser {
            args,
            inline: None,
            current: String::new(),
            only_values: false,
        })
    }

    /// Parses the process's arguments.
    pub fn from_env() -> Result<Parser> {
        Parser::new(std::env::args_os().skip(1))
    }

    /// The next item, or `None` at the end.
    pub fn next_arg(&mut self) -> Result<Option<Arg>> {
        if let Some(v) = self.inline.take() {
            return Err(Error::usage(format!(
                "option {} takes no value (got '{v}')",
                self.current
            )));
        }
        loop {
            let Some(a) = self.args.pop_front() else {
                return Ok(None);
            };
            if self.only_values {
                return Ok(Some(Arg::Value(a)));
            }
            if a == "--" {
                self.only_values = true;
                continue;
            }
            if let Some(long) = a.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                self.current = format!("--{name}");
                self.inline = inline;
                return Ok(Some(Arg::Opt(self.current.clone())));
            }
            if a.len() > 1 && a.starts_with('-') {
                if a.chars().count() != 2 {
                    return Err(Error::usage(format!(
                        "unknown option '{a}' (long options take two dashes)"
                    )));
                }
                self.current = a.clone();
                return Ok(Some(Arg::Opt(a)));
            }
            return Ok(Some(Arg::Value(a)));
        }
    }

    /// The value of the option just returned by [`Parser::next_arg`].
    pub fn value(&mut self) -> Result<String> {
        if let Some(v) = self.inline.take() {
            return Ok(v);
        }
        self.args
            .pop_front()
            .ok_or_else(|| Error::usage(format!("option {} needs a value", self.current)))
    }

    /// The value of the current option, parsed with `FromStr`.
    pub fn parse<T: FromStr>(&mut self) -> Result<T>
    where
        T::Err: Display,
    {
        let v = self.value()?;
        v.parse()
            .map_err(|e| Error::usage(format!("invalid value '{v}' for {}: {e}", self.current)))
    }

    /// The value of the current option, converted by `f` (whose error message is put in a
    /// usage error naming the option).
    pub fn parse_with<T>(
        &mut self,
        f: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        let v = self.value()?;
        f(&v).map_err(|e| Error::usage(format!("invalid value '{v}' for {}: {e}", self.current)))
    }

    /// The value of the current option as a byte count ([`parse_size`]).
    pub fn size(&mut self) -> Result<u64> {
        self.parse_with(parse_size)
    }

    /// The value of the current option as a duration ([`parse_duration`]).
    pub fn duration(&mut self) -> Result<Duration> {
        self.parse_with(parse_duration)
    }

    /// The error for an item the tool does not know.
    pub fn unexpected(&self, arg: Arg) -> Error {
        match arg {
            Arg::Opt(o) => Error::usage(format!("unknown option '{o}'")),
            Arg::Value(v) => Error::usage(format!("unexpected argument '{v}'")),
        }
    }
}

/// Parses a byte count: a decimal number with an optional binary suffix K, M, G or T
/// (powers of 1024; case-insensitive, optionally followed by `i`/`iB`/`B`): `4096`, `64K`,
/// `1M`, `10GiB`, `1.5G`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return Err("expected a number with an optional K/M/G/T suffix".into());
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        _ => return Err(format!("unknown size suffix '{suffix}' (use K, M, G or T)")),
    };
    let mult = 1u64 << shift;
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| "size too large".to_string());
    }
    let f: f64 = num
        .parse()
        .map_err(|_| format!("'{num}' is not a number"))?;
    let bytes = (f * mult as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err("size out of range".into());
    }
    Ok(bytes as u64)
}

/// Parses a duration: seconds as a decimal number (`10`, `0.5`) or with a suffix `s`, `ms`,
/// `us`, `m` (minutes).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let f: f64 = num
        .parse()
        .map_err(|_| "expected seconds, e.g. 10, 0.5, 250ms".to_string())?;
    let secs = match suffix {
        "" | "s" => f,
        "ms" => f / 1e3,
        "us" => f / 1e6,
        "m" | "min" => f * 60.0,
        _ => {
            return Err(format!(
                "unknown time suffix '{suffix}' (use s, ms, us or m)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Parses a CID: a number (decimal or 0x hex) or one of `any` (0xFFFFFFFF), `local` (1),
/// `host` (2), `hypervisor` (0).
pub fn parse_cid(s: &str) -> std::result::Result<u32, String> {
    match s.to_ascii_lowercase().as_str() {
        "any" => Ok(VMADDR_CID_ANY),
        "local" | "loopback" => Ok(VMADDR_CID_LOCAL),
        "host" => Ok(VMADDR_CID_HOST),
        "hypervisor" => Ok(VMADDR_CID_HYPERVISOR),
        _ => parse_u32(s),
    }
}

/// Parses a port: a number (decimal or 0x hex) or `any` (0xFFFFFFFF).
pub fn parse_port(s: &str) -> std::result::Result<u32, String> {
    if s.eq_ignore_ascii_case("any") {
        return Ok(VMADDR_PORT_ANY);
    }
    parse_u32(s)
}

fn parse_u32(s: &str) -> std::result::Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| e.to_string())
}

/// Which end of a connection a tool is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Binds and listens.
    Server,
    /// Connects.
    Client,
}

/// The transport options every tool takes: `--cid`, `--port`, `--seqpacket`, or `--tcp` or
/// `--unix` instead of AF_VSOCK.
#[derive(Debug, Default)]
pub struct TransportOpts {
    cid: Option<u32>,
    port: Option<u32>,
    seqpacket: bool,
    tcp: Option<String>,
    unix: Option<PathBuf>,
}

impl TransportOpts {
    /// Handles `opt` if it is a transport option; `Ok(false)` if it is not one.
    pub fn parse(&mut self, opt: &str, p: &mut Parser) -> Result<bool> {
        match opt {
            "--cid" => self.cid = Some(p.parse_with(parse_cid)?),
            "--port" => self.port = Some(p.parse_with(parse_port)?),
            "--seqpacket" => self.seqpacket = true,
            "--tcp" => self.tcp = Some(p.value()?),
            "--unix" => self.unix = Some(PathBuf::from(p.value()?)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether `--seqpacket` was given.
    pub fn seqpacket(&self) -> bool {
        self.seqpacket
    }

    /// The endpoint to listen on or connect to.  AF_VSOCK defaults: a server binds
    /// `VMADDR_CID_ANY`, a client connects to CID 1 (`VMADDR_CID_LOCAL`); both use
    /// `default_port` unless `--port` is given.
    pub fn target(&self, role: Role, default_port: u32) -> Result<Target> {
        let vsock_opts = self.cid.is_some() || self.port.is_some() || self.seqpacket;
        match (&self.tcp, &self.unix) {
            (Some(_), Some(_)) => Err(Error::usage("--tcp and --unix exclude each other")),
            (Some(_), None) | (None, Some(_)) if vsock_opts => Err(Error::usage(
                "--cid, --port and --seqpacket are AF_VSOCK options; they do not go with --tcp or --unix",
            )),
            (Some(tcp), None) => Ok(Target::Tcp(resolve_tcp(tcp)?)),
            (None, Some(path)) => Ok(Target::Unix(path.clone())),
            (None, None) => {
                let cid = self.cid.unwrap_or(match role {
                    Role::Server => VMADDR_CID_ANY,
                    Role::Client => VMADDR_CID_LOCAL,
                });
                let ty = if self.seqpacket {
                    SockType::SeqPacket
                } else {
                    SockType::Stream
                };
                Ok(Target::Vsock(
                    VsockAddr::new(cid, self.port.unwrap_or(default_port)),
                    ty,
                ))
            }
        }
    }
}

/// Resolves `--tcp`'s value: `HOST:PORT`, `[V6]:PORT`, or a bare port (on 127.0.0.1).
pub fn resolve_tcp(s: &str) -> Result<SocketAddr> {
    let with_host;
    let s = if s.parse::<u16>().is_ok() {
        with_host = format!("127.0.0.1:{s}");
        &with_host
    } else {
        s
    };
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| Error::usage(format!("invalid --tcp address '{s}': {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Error::usage(format!("--tcp address '{s}' resolves to nothing")))
}

/// Options every tool shares: `--timeout`, `--deadline`, `--verbose`.
#[derive(Debug)]
pub struct CommonOpts {
    /// Bound on each connect, send and receive (`--timeout`, default 10 s).
    pub timeout: Duration,
    /// Whole-run bound enforced by a watchdog thread (`--deadline`, default none).
    pub deadline: Option<Duration>,
    /// `-v`/`--verbose`.
    pub verbose: bool,
}

/// The default of `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for CommonOpts {
    fn default() -> Self {
        CommonOpts {
            timeout: DEFAULT_TIMEOUT,
            deadline: None,
            verbose: false,
        }
    }
}

impl CommonOpts {
    /// Handles `opt` if it is a common option; `Ok(false)` if it is not one.
    pub fn parse(&mut self, opt: &str, p: &mut Parser) -> Result<bool> {
        match opt {
            "--timeout" => {
                let t = p.duration()?;
                if t.is_zero() {
                    return Err(Error::usage("--timeout must be more than 0"));
                }
                self.timeout = t;
            }
            "--deadline" => {
                let d = p.duration()?;
                self.deadline = (!d.is_zero()).then_some(d);
            }
            "-v" | "--verbose" => self.verbose = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Starts the `--deadline` watchdog, if one was asked for.
    pub fn start(&self, prog: &'static str) {
        if let Some(d) = self.deadline {
            start_watchdog(prog, d);
        }
    }
}

/// Parses `--accept-timeout`'s value: 0 means wait forever.
pub fn accept_timeout(p: &mut Parser) -> Result<Option<Duration>> {
    let d = p.duration()?;
    Ok((!d.is_zero()).then_some(d))
}

/// The help text of the transport options, for the tools' `--help`.
#[macro_export]
macro_rules! transport_help {
    () => {
        "
Transport (AF_VSOCK unless --tcp or --unix):
  --cid CID            AF_VSOCK CID: a number, 'any' (0xFFFFFFFF), 'local' (1), 'host' (2);
                       servers default to 'any', clients to 1 (VMADDR_CID_LOCAL, loopback)
  --port PORT          AF_VSOCK port ('any' = 0xFFFFFFFF lets a server's bind pick one)
  --seqpacket          SOCK_SEQPACKET instead of SOCK_STREAM
  --tcp ADDR           use TCP instead: HOST:PORT, or a bare PORT for 127.0.0.1:PORT
  --unix PATH          use an AF_UNIX stream socket at PATH instead
"
    };
}

/// The help text of the common options, for the tools' `--help`.
#[macro_export]
macro_rules! common_help {
    () => {
        "
Common options:
  --timeout SECS       bound on every connect, send and receive (default 10; also 500ms)
  --deadline SECS      end the whole run with status 124 after SECS (default: none)
  -v, --verbose        say more on stderr
  -h, --help           this help
"
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(args: &[&str]) -> Parser {
        Parser::new(args.iter().map(OsString::from)).unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size(" 8B "), Ok(8));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.2.3").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn cids_and_ports() {
        assert_eq!(parse_cid("any"), Ok(0xFFFF_FFFF));
        assert_eq!(parse_cid("local"), Ok(1));
        assert_eq!(parse_cid("3"), Ok(3));
        assert_eq!(parse_cid("0x10"), Ok(16));
        assert!(parse_cid("-1").is_err());
        assert_eq!(parse_port("any"), Ok(0xFFFF_FFFF));
        assert_eq!(parse_port("1234"), Ok(1234));
        assert!(parse_port("4294967296").is_err());
    }

    #[test]
    fn parser_forms() {
        let mut p = parser(&["--size=64", "--count", "3", "-v", "msg", "--", "--x"]);
        assert_eq!(p.next_arg().unwrap(), Some(Arg::Opt("--size".into())));
        assert_eq!(p.size().unwrap(), 64);
        assert_eq!(p.next_arg().unwrap(), Some(Arg::Opt("--count".into())));
        assert_eq!(p.parse::<u32>().unwrap(), 3);
        assert_eq!(p.next_arg().unwrap(), Some(Arg::Opt("-v".into())));
        assert_eq!(p.next_arg().unwrap(), Some(Arg::Value("msg".into())));
        assert_eq!(p.next_arg().unwrap(), Some(Arg::Value("--x".into())));
        assert_eq!(p.next_arg().unwrap(), None);
    }

    #[test]
    fn parser_errors() {
        let mut p = parser(&["--once=yes"]);
        p.next_arg().unwrap();
        assert!(p.next_arg().unwrap_err().is_usage());

        let mut p = parser(&["--count"]);
        p.next_arg().unwrap();
        assert!(p.value().unwrap_err().message().contains("needs a value"));

        let mut p = parser(&["--count", "x"]);
        p.next_arg().unwrap();
        assert!(p.parse::<u32>().is_err());

        let mut p = parser(&["-abc"]);
        assert!(p.next_arg().is_err());
    }

    #[test]
    fn transport_targets() {
        let t = TransportOpts::default();
        assert_eq!(
            t.target(Role::Client, 1234).unwrap(),
            Target::Vsock(VsockAddr::new(1, 1234), SockType::Stream)
        );
        assert_eq!(
            t.target(Role::Server, 1234).unwrap(),
            Target::Vsock(VsockAddr::new(VMADDR_CID_ANY, 1234), SockType::Stream)
        );

        let mut t = TransportOpts::default();
        let mut p = parser(&["5000"]);
        assert!(t.parse("--tcp", &mut p).unwrap());
        assert_eq!(
            t.target(Role::Client, 1).unwrap(),
            Target::Tcp("127.0.0.1:5000".parse().unwrap())
        );
        let mut p = parser(&["7"]);
        t.parse("--port", &mut p).unwrap();
        assert!(t.target(Role::Client, 1).is_err());

        let mut t = TransportOpts::default();
        let mut p = parser(&["/tmp/x", "3"]);
        t.parse("--unix", &mut p).unwrap();
        t.parse("--cid", &mut p).unwrap();
        assert!(t.target(Role::Client, 1).is_err());
        assert!(!t.parse("--size", &mut p).unwrap());
    }
}
