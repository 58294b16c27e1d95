#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Differential conformance probe for AF_VSOCK (address family 40) on the loopback transport.

Runs as root inside a test VM where exactly one AF_VSOCK stack is loaded (the C vsock.ko +
vsock_loopback.ko, or rvsock.ko + rvsock_loopback.ko); it does not know which.  It performs a
long, fixed list of deterministic checks and prints one line per check on stdout:

    <check-name> <result>

where <result> is a canonical, stack-independent description (``ok``, ``errno=EINVAL``,
``ret=16``, ``events=POLLIN|POLLRDNORM``, ``data=b'...'``...).  Nothing nondeterministic is
printed: ephemeral ports become ``ephemeral``, ports of the check's own block ``P+k``.  Two
outputs (one per stack) are compared with compare.py.

Each scenario (a group of related checks) gets its own block of ports, fresh sockets and a
watchdog; an exception is printed as the result of the check it happened in
(``exception=<Type>:<errno name>``) and never stops the run.  The exit status is 0 unless the
probe itself is broken.

Python 3 standard library only.  See README.md next to this file.
"""

import ctypes
import errno
import fcntl
import os
import re
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time

# ---- constants ------------------------------------------------------------------------------

AF_VSOCK = 40
LVL = 40  # AF_VSOCK socket option level
SOL_VSOCK = 287  # cmsg level of error-queue messages
VSOCK_RECVERR = 1
CID_ANY = 0xFFFFFFFF
PORT_ANY = 0xFFFFFFFF
CID_LOCAL = 1
CID_HOST = 2

STREAM = socket.SOCK_STREAM
SEQ = socket.SOCK_SEQPACKET
DGRAM = socket.SOCK_DGRAM
SOCK_NONBLOCK = 0o4000
SOCK_CLOEXEC = 0o2000000

SO_VM_BUF, SO_VM_BUF_MIN, SO_VM_BUF_MAX = 0, 1, 2
SO_VM_CT_OLD, SO_VM_CT_NEW = 6, 8

SOL_SOCKET = 1
SO_TYPE, SO_ERROR, SO_SNDBUF, SO_RCVBUF, SO_KEEPALIVE = 3, 4, 7, 8, 9
SO_LINGER, SO_RCVLOWAT, SO_RCVTIMEO, SO_SNDTIMEO = 13, 18, 20, 21
SO_ACCEPTCONN, SO_PROTOCOL, SO_DOMAIN, SO_PEEK_OFF, SO_ZEROCOPY = 30, 38, 39, 42, 60

MSG_OOB, MSG_PEEK, MSG_CTRUNC, MSG_TRUNC = 0x1, 0x2, 0x8, 0x20
MSG_DONTWAIT, MSG_EOR, MSG_WAITALL, MSG_ERRQUEUE = 0x40, 0x80, 0x100, 0x2000
MSG_NOSIGNAL, MSG_ZEROCOPY = 0x4000, 0x4000000
MSG_NAMES = [(MSG_OOB, 'MSG_OOB'), (MSG_PEEK, 'MSG_PEEK'), (MSG_CTRUNC, 'MSG_CTRUNC'),
             (MSG_TRUNC, 'MSG_TRUNC'), (MSG_DONTWAIT, 'MSG_DONTWAIT'), (MSG_EOR, 'MSG_EOR'),
             (MSG_WAITALL, 'MSG_WAITALL'), (MSG_ERRQUEUE, 'MSG_ERRQUEUE'),
             (MSG_NOSIGNAL, 'MSG_NOSIGNAL'), (MSG_ZEROCOPY, 'MSG_ZEROCOPY')]

SIOCOUTQ = 0x5411
SIOCINQ = 0x541B
FIONBIO = 0x5421
SIOCGSTAMP = 0x8906
IOCTL_VM_SOCKETS_GET_LOCAL_CID = 0x7B9

POLLMSG = 0x400
POLL_NAMES = [(select.POLLIN, 'POLLIN'), (select.POLLPRI, 'POLLPRI'), (select.POLLOUT, 'POLLOUT'),
              (select.POLLERR, 'POLLERR'), (select.POLLHUP, 'POLLHUP'),
              (select.POLLNVAL, 'POLLNVAL'), (select.POLLRDNORM, 'POLLRDNORM'),
              (select.POLLRDBAND, 'POLLRDBAND'), (select.POLLWRNORM, 'POLLWRNORM'),
              (select.POLLWRBAND, 'POLLWRBAND'), (POLLMSG, 'POLLMSG'),
              (select.POLLRDHUP, 'POLLRDHUP')]
POLL_ALL = 0
for _b, _n in POLL_NAMES:
    POLL_ALL |= _b
POLLIN, POLLOUT, POLLERR = select.POLLIN, select.POLLOUT, select.POLLERR
POLLHUP, POLLRDHUP = select.POLLHUP, select.POLLRDHUP

DEFAULT_TIMEO = 3.0  # SO_RCVTIMEO / SO_SNDTIMEO of every socket, so that nothing blocks forever
SCENARIO_LIMIT = 25.0  # watchdog per scenario (seconds)
PORT_STRIDE = 40  # ports per scenario block
FIXED_PORTS = {1024, 0xFFFFFFFE}  # fixed ports above 1023 used by bind.port

# ---- libc -----------------------------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
c_int, c_uint, c_void_p, c_size_t = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t
c_ssize_t, c_ulong, c_long = ctypes.c_ssize_t, ctypes.c_ulong, ctypes.c_long


def _fn(name, restype, *argtypes):
    f = getattr(libc, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


c_socket = _fn('socket', c_int, c_int, c_int, c_int)
c_bind = _fn('bind', c_int, c_int, c_void_p, c_uint)
c_connect = _fn('connect', c_int, c_int, c_void_p, c_uint)
c_listen = _fn('listen', c_int, c_int, c_int)
c_accept4 = _fn('accept4', c_int, c_int, c_void_p, c_void_p, c_int)
c_getsockname = _fn('getsockname', c_int, c_int, c_void_p, c_void_p)
c_getpeername = _fn('getpeername', c_int, c_int, c_void_p, c_void_p)
c_send = _fn('send', c_ssize_t, c_int, c_void_p, c_size_t, c_int)
c_recv = _fn('recv', c_ssize_t, c_int, c_void_p, c_size_t, c_int)
c_recvfrom = _fn('recvfrom', c_ssize_t, c_int, c_void_p, c_size_t, c_int, c_void_p, c_void_p)
c_sendmsg = _fn('sendmsg', c_ssize_t, c_int, c_void_p, c_int)
c_recvmsg = _fn('recvmsg', c_ssize_t, c_int, c_void_p, c_int)
c_setsockopt = _fn('setsockopt', c_int, c_int, c_int, c_int, c_void_p, c_uint)
c_getsockopt = _fn('getsockopt', c_int, c_int, c_int, c_int, c_void_p, c_void_p)
c_ioctl = _fn('ioctl', c_int, c_int, c_ulong, c_void_p)
c_shutdown = _fn('shutdown', c_int, c_int, c_int)
c_mmap = _fn('mmap', c_void_p, c_void_p, c_size_t, c_int, c_int, c_int, c_long)
c_munmap = _fn('munmap', c_int, c_void_p, c_size_t)
c_write = _fn('write', c_ssize_t, c_int, c_void_p, c_size_t)
c_read = _fn('read', c_ssize_t, c_int, c_void_p, c_size_t)


class iovec(ctypes.Structure):
    _fields_ = [('iov_base', c_void_p), ('iov_len', c_size_t)]


class msghdr(ctypes.Structure):
    _fields_ = [('msg_name', c_void_p), ('msg_namelen', c_uint),
                ('msg_iov', ctypes.POINTER(iovec)), ('msg_iovlen', c_size_t),
                ('msg_control', c_void_p), ('msg_controllen', c_size_t), ('msg_flags', c_int)]


def _sys(f, *args):
    """Calls a libc function; raises OSError on a -1 return."""
    ctypes.set_errno(0)
    r = f(*args)
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


# ---- result formatting ----------------------------------------------------------------------

class Watchdog(BaseException):
    """Raised in the main thread when a scenario runs past its time limit."""


def ename(e):
    if e is None:
        return 'None'
    if e == 0:
        return '0'
    if e == errno.EOPNOTSUPP:
        return 'EOPNOTSUPP'
    return errno.errorcode.get(e, 'E%d' % e)


def exc_str(e):
    if isinstance(e, OSError) and e.errno is not None:
        return 'exception=%s:%s' % (type(e).__name__, ename(e.errno))
    msg = re.sub(r'0x[0-9a-fA-F]+', '0x?', str(e))[:80].replace(' ', '_')
    return 'exception=%s:%s' % (type(e).__name__, msg)


def R(fn, fmt=None):
    """Runs fn; returns its canonical result string (errno=..., ok, ret=..., or fmt(value))."""
    try:
        v = fn()
    except OSError as e:
        if e.errno is None:
            return exc_str(e)
        return 'errno=' + ename(e.errno)
    except Exception as e:  # noqa: BLE001 - every failure is a result
        return exc_str(e)
    if fmt is not None:
        try:
            return fmt(v)
        except Exception as e:  # noqa: BLE001
            return exc_str(e)
    if v is None:
        return 'ok'
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return 'data=%r' % (v,)
    return 'ret=%s' % (v,)


def cex(s, addr):
    """connect_ex() as a result string: 'ok' or 'errno=...'."""
    e = s.connect_ex(addr)
    return 'ok' if e == 0 else 'errno=' + ename(e)


def acc_r(c, l):
    """accept() as a result: 'accepted' (the socket is tracked) or raises."""
    c.track(l.accept()[0])
    return 'accepted'


def rrecv(s, n, flags=0):
    """recv() through libc (CPython's socket.recv(0) returns b'' without a system call)."""
    buf = ctypes.create_string_buffer(max(n, 1))
    r = _sys(c_recv, fd_of(s), buf, n, flags)
    return buf.raw[:r]


def bind_close(c, port, cid=CID_ANY, typ=STREAM):
    """Binds a fresh socket to (cid, port) and closes it again; returns the bind result."""
    s = c.sock(typ)
    try:
        return R(lambda: s.bind((cid, port)))
    finally:
        s.close()


def mflags(f):
    names = [n for b, n in MSG_NAMES if f & b]
    rest = f & ~sum(b for b, _ in MSG_NAMES)
    if rest:
        names.append('0x%x' % rest)
    return '|'.join(sorted(names)) if names else '0'


def pstr(m):
    names = sorted(n for b, n in POLL_NAMES if m & b)
    rest = m & ~POLL_ALL
    if rest:
        names.append('0x%x' % rest)
    return 'events=' + ('|'.join(names) if names else 'none')


def fcid(cid):
    return 'ANY' if cid == CID_ANY else str(cid)


# ---- sockets and addresses --------------------------------------------------------------------

def vmaddr(cid, port, family=AF_VSOCK, flags=0, res1=0, zero=b'\0\0\0'):
    return struct.pack('<HHIIB3s', family, res1, port & 0xFFFFFFFF, cid & 0xFFFFFFFF, flags, zero)


def fd_of(s):
    return s if isinstance(s, int) else s.fileno()


def raw_bind(s, addr, length=None):
    buf = ctypes.create_string_buffer(addr + b'\0' * 160, len(addr) + 160)
    return _sys(c_bind, fd_of(s), buf, len(addr) if length is None else length)


def raw_connect(s, addr, length=None):
    buf = ctypes.create_string_buffer(addr + b'\0' * 160, len(addr) + 160)
    return _sys(c_connect, fd_of(s), buf, len(addr) if length is None else length)


def raw_getname(s, peer=False, addrlen=128):
    buf = ctypes.create_string_buffer(b'\xAA' * 128, 128)
    ln = c_uint(addrlen)
    _sys(c_getpeername if peer else c_getsockname, fd_of(s), buf, ctypes.byref(ln))
    return ln.value, buf.raw


def set_timeo(s, rcv=None, snd=None):
    if rcv is not None:
        sec = int(rcv)
        sso(s, SOL_SOCKET, SO_RCVTIMEO, struct.pack('ll', sec, int((rcv - sec) * 1e6)))
    if snd is not None:
        sec = int(snd)
        sso(s, SOL_SOCKET, SO_SNDTIMEO, struct.pack('ll', sec, int((snd - sec) * 1e6)))


def ssi(s, level, opt, val):
    """setsockopt with an int (optlen 4); Python's own setsockopt passes a u64 (optlen 8) on
    AF_VSOCK sockets, whatever the level."""
    return sso(s, level, opt, struct.pack('i', val))


def gso_int(s, level, opt):
    v = c_int(-12345)
    ln = c_uint(4)
    _sys(c_getsockopt, fd_of(s), level, opt, ctypes.byref(v), ctypes.byref(ln))
    return v.value


def sso(s, level, opt, data, optlen=None):
    buf = ctypes.create_string_buffer(data, max(len(data), 1))
    return _sys(c_setsockopt, fd_of(s), level, opt, buf, len(data) if optlen is None else optlen)


def gso_raw(s, level, opt, optlen):
    buf = ctypes.create_string_buffer(b'\xAA' * max(optlen, 64), max(optlen, 64))
    ln = c_int(optlen)
    _sys(c_getsockopt, fd_of(s), level, opt, buf, ctypes.byref(ln))
    return ln.value, buf.raw[:max(ln.value, 0)]


def u64(v):
    return struct.pack('<Q', v & 0xFFFFFFFFFFFFFFFF)


def get_u64(s, opt):
    ln, raw = gso_raw(s, LVL, opt, 8)
    return struct.unpack('<Q', raw[:8])[0]


def tv(sec, usec):
    return struct.pack('<qq', sec, usec)


def ioctl_int(s, req):
    v = c_int(-12345)
    _sys(c_ioctl, fd_of(s), req, ctypes.byref(v))
    return v.value


def recvmsg_raw(s, size, flags=0, ctrl=0, namelen=0, nullbuf=False):
    """recvmsg via libc; returns (ret, data, msg_flags, msg_namelen, control bytes)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    iov = iovec(None if nullbuf else ctypes.cast(buf, c_void_p), size)
    cbuf = ctypes.create_string_buffer(max(ctrl, 1))
    nbuf = ctypes.create_string_buffer(b'\xAA' * 128, 128)
    m = msghdr()
    m.msg_name = ctypes.cast(nbuf, c_void_p) if namelen else None
    m.msg_namelen = namelen
    m.msg_iov = ctypes.pointer(iov)
    m.msg_iovlen = 1
    m.msg_control = ctypes.cast(cbuf, c_void_p) if ctrl else None
    m.msg_controllen = ctrl
    m.msg_flags = 0
    r = _sys(c_recvmsg, fd_of(s), ctypes.byref(m), flags)
    return r, buf.raw[:min(r, size)], m.msg_flags, m.msg_namelen, cbuf.raw[:m.msg_controllen]


def sendmsg_raw(s, parts, flags=0, name=None):
    bufs = [ctypes.create_string_buffer(p, max(len(p), 1)) for p in parts]
    iovs = (iovec * max(len(parts), 1))()
    for i, (b, p) in enumerate(zip(bufs, parts)):
        iovs[i].iov_base = ctypes.cast(b, c_void_p)
        iovs[i].iov_len = len(p)
    nbuf = ctypes.create_string_buffer(name or b'\0', max(len(name or b''), 1))
    m = msghdr()
    m.msg_name = ctypes.cast(nbuf, c_void_p) if name else None
    m.msg_namelen = len(name) if name else 0
    m.msg_iov = iovs
    m.msg_iovlen = len(parts)
    m.msg_control = None
    m.msg_controllen = 0
    m.msg_flags = 0
    return _sys(c_sendmsg, fd_of(s), ctypes.byref(m), flags)


def fmt_recvmsg(r):
    ret, data, fl, _nl, _c = r
    return 'ret=%d flags=%s data=%r' % (ret, mflags(fl), data[:32])


def mask(s):
    p = select.poll()
    p.register(fd_of(s), POLL_ALL)
    ev = p.poll(0)
    return ev[0][1] if ev else 0


def pmask(s):
    return pstr(mask(s))


def wait_ev(s, want, timeout=DEFAULT_TIMEO):
    """Polls until one of the `want` bits is set; returns True if it was seen in time."""
    deadline = time.monotonic() + timeout
    p = select.poll()
    p.register(fd_of(s), want)
    while True:
        left = deadline - time.monotonic()
        if mask(s) & want:
            return True
        if left <= 0:
            return False
        p.poll(min(50, max(1, int(left * 1000))))
        time.sleep(0.005)


def wait_mask(s, want, timeout=DEFAULT_TIMEO):
    """Waits for one of the `want` bits, lets the loopback settle, then returns the mask."""
    ok = wait_ev(s, want, timeout)
    settle()
    m = pstr(mask(s))
    return m if ok else 'timeout ' + m


def nonblock_flag(fd):
    return 1 if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK else 0


def cloexec_flag(fd):
    return 1 if fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC else 0


# ---- signals and background helpers ----------------------------------------------------------

ASYNC_SIGS = {signal.SIGALRM, signal.SIGIO, signal.SIGPIPE, signal.SIGUSR1}


def bg(delay, fn):
    """Runs fn after `delay` seconds in a thread that blocks the signals the checks use."""
    def run():
        signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGS)
        time.sleep(delay)
        try:
            fn()
        except Exception:  # noqa: BLE001
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def waited(fn, at_least):
    """Runs fn (a call expected to block); returns '<result> waited=yes|no', yes when it took at
    least `at_least` seconds."""
    t0 = time.monotonic()
    r = R(fn)
    return '%s waited=%s' % (r, 'yes' if time.monotonic() - t0 >= at_least else 'no')


def with_sigpipe(fn):
    """Runs fn with SIGPIPE blocked; returns '<result> sigpipe=yes|no'."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        r = R(fn)
        pend = signal.SIGPIPE in signal.sigpending()
        while signal.SIGPIPE in signal.sigpending():
            signal.sigtimedwait([signal.SIGPIPE], 0)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return '%s sigpipe=%s' % (r, 'yes' if pend else 'no')


class Alarm:
    """SIGALRM after `delay` seconds with a counting handler (SA_RESTART if restart)."""

    def __init__(self, delay, restart=False):
        self.delay, self.restart, self.count = delay, restart, 0

    def _h(self, signum, frame):
        self.count += 1

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._h)
        signal.siginterrupt(signal.SIGALRM, not self.restart)
        signal.setitimer(signal.ITIMER_REAL, self.delay)
        return self

    def __exit__(self, *a):
        signal.setitimer(signal.ITIMER_REAL, 0)
        for _ in range(100):
            pass
        signal.signal(signal.SIGALRM, self.old)
        signal.siginterrupt(signal.SIGALRM, True)
        return False


# ---- scenario machinery ----------------------------------------------------------------------

SCENARIOS = []
PORT_BASE = 20000
SYNC = None


LIMITS = {}  # scenarios with a watchdog limit of their own


def sc(name, limit=None):
    def deco(fn):
        SCENARIOS.append((name, fn))
        if limit:
            LIMITS[name] = limit
        return fn
    return deco


class Ctx:
    def __init__(self, idx, name):
        self.name = name
        self.base = PORT_BASE + idx * PORT_STRIDE
        self.lines = []
        self.res = []
        self.last = None

    def p(self, k):
        assert 0 <= k < PORT_STRIDE
        return self.base + k

    def fport(self, port):
        if port == PORT_ANY:
            return 'ANY'
        if self.base <= port < self.base + PORT_STRIDE:
            return 'P+%d' % (port - self.base)
        if port in FIXED_PORTS:
            return str(port)
        if port > 1023:
            return 'ephemeral'
        return str(port)

    def faddr(self, raw, full=True):
        fam, r1, port, cid, flags, zero = struct.unpack('<HHIIB3s', raw[:16])
        if not full:
            return 'cid=%s port=%s' % (fcid(cid), self.fport(port))
        return 'family=%d cid=%s port=%s flags=%d res1=%d zero=%s' % (
            fam, fcid(cid), self.fport(port), flags, r1, zero.hex())

    def name_of(self, s, peer=False, full=False):
        ln, raw = raw_getname(s, peer)
        return ('len=%d ' % ln if full else '') + self.faddr(raw, full)

    def emit(self, sub, val):
        self.lines.append((('%s.%s' % (self.name, sub)) if sub else self.name, str(val)))

    def check(self, sub, fn, fmt=None):
        self.emit(sub, R(fn, fmt))

    def track(self, obj):
        self.res.append(obj)
        return obj

    def sock(self, typ=STREAM, timeo=DEFAULT_TIMEO, nonblock=False):
        s = self.track(socket.socket(AF_VSOCK, typ))
        if timeo:
            set_timeo(s, timeo, timeo)
        if nonblock:
            s.setblocking(False)
        return s

    def acc(self, l, timeo=DEFAULT_TIMEO):
        conn, _addr = l.accept()
        self.track(conn)
        if timeo:
            set_timeo(conn, timeo, timeo)
        return conn

    def listener(self, k, typ=STREAM, backlog=16, cid=CID_ANY):
        l = self.sock(typ)
        l.bind((cid, self.p(k)))
        l.listen(backlog)
        return l

    def pair(self, k, typ=STREAM, cid=CID_LOCAL, client_port=None, before=None, backlog=16):
        """listener on P+k, a client (bound to P+client_port if given) connected to it, and
        the accepted socket: returns (listener, client, server)."""
        l = self.listener(k, typ, backlog)
        cl = self.sock(typ)
        if client_port is not None:
            cl.bind((CID_ANY, self.p(client_port)))
        if before:
            before(cl)
        cl.connect((cid, self.p(k)))
        sv = self.acc(l)
        return l, cl, sv

    def close_all(self):
        for o in reversed(self.res):
            try:
                if isinstance(o, int):
                    os.close(o)
                else:
                    o.close()
            except Exception:  # noqa: BLE001
                pass
        self.res = []


def settle():
    """Lets the loopback transport deliver everything queued so far (and the replies to it):
    two round trips on a dedicated connection, behind every packet sent before."""
    if SYNC is None:
        time.sleep(0.3)
        return
    a, b = SYNC
    for _ in range(2):
        a.send(b'.')
        if b.recv(1) != b'.':
            raise RuntimeError('sync')
        b.send(b',')
        if a.recv(1) != b',':
            raise RuntimeError('sync')


def try_bind_until(c, port, cid=CID_ANY, timeout=3.0, typ=STREAM):
    """Binds a fresh socket to (cid, port), retrying on EADDRINUSE; returns the result."""
    deadline = time.monotonic() + timeout
    while True:
        s = c.sock(typ)
        r = R(lambda: s.bind((cid, port)))
        if r != 'errno=EADDRINUSE' or time.monotonic() > deadline:
            c.last = s
            return r
        s.close()
        time.sleep(0.02)


def recv_all(s, n, timeout=DEFAULT_TIMEO):
    out = b''
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return out


def drain(s, timeout=DEFAULT_TIMEO):
    """Reads until EOF (0) and returns everything read."""
    out = b''
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = s.recv(65536)
        if not d:
            return out
        out += d
    raise RuntimeError('no EOF')


# ==== 1. socket() =============================================================================

@sc('socket.create')
def _(c):
    cases = [('stream.proto0', STREAM, 0), ('stream.proto40', STREAM, 40),
             ('stream.proto1', STREAM, 1), ('stream.proto41', STREAM, 41),
             ('stream.proto-1', STREAM, -1),
             ('seqpacket.proto0', SEQ, 0), ('seqpacket.proto40', SEQ, 40),
             ('seqpacket.proto6', SEQ, 6),
             ('dgram.proto0', DGRAM, 0), ('dgram.proto40', DGRAM, 40),
             ('dgram.proto17', DGRAM, 17),
             ('raw.proto0', socket.SOCK_RAW, 0), ('raw.proto40', socket.SOCK_RAW, 40),
             ('raw.proto1', socket.SOCK_RAW, 1), ('rdm.proto0', 4, 0), ('dccp.proto0', 6, 0),
             ('packet.proto0', 10, 0), ('type11.proto0', 11, 0), ('type-1.proto0', -1, 0)]

    def mk(t, p):
        fd = c.track(_sys(c_socket, AF_VSOCK, t, p))
        return 'ok type=%d protocol=%d domain=%d' % (
            gso_int(fd, SOL_SOCKET, SO_TYPE), gso_int(fd, SOL_SOCKET, SO_PROTOCOL),
            gso_int(fd, SOL_SOCKET, SO_DOMAIN))
    for name, t, p in cases:
        c.check(name, lambda t=t, p=p: mk(t, p))


@sc('socket.flags')
def _(c):
    def mk(t):
        fd = c.track(_sys(c_socket, AF_VSOCK, t, 0))
        return 'ok nonblock=%d cloexec=%d' % (nonblock_flag(fd), cloexec_flag(fd))
    for tn, t in (('stream', STREAM), ('seqpacket', SEQ)):
        c.check(tn + '.plain', lambda t=t: mk(t))
        c.check(tn + '.nonblock_cloexec', lambda t=t: mk(t | SOCK_NONBLOCK | SOCK_CLOEXEC))
        c.check(tn + '.nonblock', lambda t=t: mk(t | SOCK_NONBLOCK))


@sc('socket.misc')
def _(c):
    c.check('socketpair.stream', lambda: c.track(socket.socketpair(AF_VSOCK, STREAM)[0]))
    c.check('socketpair.seqpacket', lambda: c.track(socket.socketpair(AF_VSOCK, SEQ)[0]))
    s = c.sock()
    c.check('fstat', lambda: 'sock' if stat.S_ISSOCK(os.fstat(s.fileno()).st_mode) else 'other')

    def do_mmap():
        p = c_mmap(None, 4096, 1, 1, s.fileno(), 0)  # PROT_READ, MAP_SHARED
        if p is None or p == ctypes.c_void_p(-1).value:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        c_munmap(p, 4096)
        return 'mapped'
    c.check('mmap', do_mmap)
    c.check('lseek', lambda: os.lseek(s.fileno(), 0, 0))
    c.check('read_unconnected', lambda: os.read(s.fileno(), 10))
    c.check('write_unconnected', lambda: os.write(s.fileno(), b'x'))
    # SO_PEEK_OFF is refused by the generic code when the family has no set_peek_off
    c.check('so_peek_off.set', lambda: sso(s, SOL_SOCKET, SO_PEEK_OFF, struct.pack('i', 0)))
    c.check('so_peek_off.get', lambda: gso_int(s, SOL_SOCKET, SO_PEEK_OFF))


@sc('procfs')
def _(c):
    def protocols():
        with open('/proc/net/protocols') as f:
            lines = [ln.split() for ln in f.read().splitlines()[1:]]
        return 'present' if any(ln and ln[0] == 'AF_VSOCK' for ln in lines) else 'absent'
    c.check('protocols.af_vsock', protocols)
    c.check('sysfs.misc_vsock',
            lambda: 'present' if os.path.isdir('/sys/class/misc/vsock') else 'absent')


# ==== 2. /dev/vsock ===========================================================================

@sc('dev')
def _(c):
    def st():
        m = os.stat('/dev/vsock')
        return '%s major=%d' % ('chr' if stat.S_ISCHR(m.st_mode) else 'other',
                                os.major(m.st_rdev))
    c.check('stat', st)
    fd = c.track(os.open('/dev/vsock', os.O_RDWR))
    c.check('open_rdonly', lambda: c.track(os.open('/dev/vsock', os.O_RDONLY)) and None)

    def cid():
        b = fcntl.ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, b'\xAA' * 4)
        return 'cid=%d' % struct.unpack('<I', b)[0]
    c.check('ioctl.get_local_cid', cid)
    c.check('ioctl.get_local_cid_null', lambda: _sys(c_ioctl, fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID,
                                                    None))
    c.check('ioctl.unknown_7ba', lambda: ioctl_int(fd, 0x7BA))
    c.check('ioctl.siocoutq', lambda: ioctl_int(fd, SIOCOUTQ))
    c.check('ioctl.fionread', lambda: ioctl_int(fd, SIOCINQ))
    c.check('read', lambda: os.read(fd, 4))
    c.check('write', lambda: os.write(fd, b'abcd'))
    c.check('lseek', lambda: os.lseek(fd, 0, 0))

    def do_mmap():
        p = c_mmap(None, 4096, 1, 1, fd, 0)
        if p is None or p == ctypes.c_void_p(-1).value:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        c_munmap(p, 4096)
        return 'mapped'
    c.check('mmap', do_mmap)
    c.check('poll', lambda: pmask(fd))


# ==== 3. bind() ===============================================================================

@sc('bind.addrlen')
def _(c):
    for i, ln in enumerate([0, 1, 8, 15, 16, 17, 128, 129, -1]):
        s = c.sock()
        c.check('len%d' % ln, lambda s=s, ln=ln, i=i: raw_bind(s, vmaddr(CID_ANY, c.p(i)),
                                                            ln & 0xFFFFFFFF) and None)
    s = c.sock()
    c.check('null.len16', lambda: _sys(c_bind, s.fileno(), None, 16))
    s = c.sock()
    c.check('null.len0', lambda: _sys(c_bind, s.fileno(), None, 0))


@sc('bind.family')
def _(c):
    for i, fam in enumerate([0, 1, 2, 10, 41, 0xFFFF]):
        s = c.sock()
        c.check('family%d' % fam, lambda s=s, fam=fam, i=i: raw_bind(
            s, vmaddr(CID_ANY, c.p(i), family=fam)))


@sc('bind.flags')
def _(c):
    for i, fl in enumerate([0, 1, 2, 3, 0x80, 0xFF]):
        s = c.sock()
        c.check('flags%d' % fl, lambda s=s, fl=fl, i=i: raw_bind(
            s, vmaddr(CID_ANY, c.p(i), flags=fl)))
    # the stored local address is re-initialised: flags, reserved1 and zero read back as 0
    s = c.sock()
    c.check('stored.flags1', lambda: raw_bind(s, vmaddr(CID_LOCAL, c.p(10), flags=1, res1=0x1234,
                                                        zero=b'xyz')))
    c.check('stored.getsockname', lambda: c.name_of(s, full=True))
    s = c.sock(SEQ)
    c.check('stored.seqpacket', lambda: raw_bind(s, vmaddr(CID_ANY, c.p(11), res1=0xFFFF,
                                                           zero=b'\xff\xff\xff')))
    c.check('stored.seqpacket.getsockname', lambda: c.name_of(s, full=True))


@sc('bind.cid')
def _(c):
    for i, cid in enumerate([CID_ANY, 0, 1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFE]):
        for tn, t in (('stream', STREAM), ('seqpacket', SEQ)):
            s = c.sock(t)
            k = 2 * i + (t == SEQ)
            c.check('%s.cid%s' % (tn, fcid(cid)), lambda s=s, cid=cid, k=k: R(
                lambda: s.bind((cid, c.p(k)))) + ' ' + c.name_of(s))


@sc('bind.port')
def _(c):
    # fixed ports: reserved ones need CAP_NET_BIND_SERVICE (root has it)
    for p in (0, 1, 1023, 1024, 0xFFFFFFFE):
        s = c.sock()
        c.check('port%d' % p, lambda s=s, p=p: R(lambda: s.bind((CID_ANY, p))) + ' ' +
                c.name_of(s))
    s = c.sock()
    c.check('any.cid_any', lambda: R(lambda: s.bind((CID_ANY, PORT_ANY))) + ' ' + c.name_of(s))
    s = c.sock()
    c.check('any.cid1', lambda: R(lambda: s.bind((CID_LOCAL, PORT_ANY))) + ' ' + c.name_of(s))
    s = c.sock(SEQ)
    c.check('any.seqpacket', lambda: R(lambda: s.bind((CID_ANY, PORT_ANY))) + ' ' + c.name_of(s))


def _delta(a, b):
    d = (b - a) & 0xFFFFFFFF
    return 'delta=%d' % d if d < 100 else 'delta=other'


@sc('bind.ephemeral')
def _(c):
    # the ephemeral counter is global and goes up by one per try (port++)
    def seq(t1, t2):
        a, b = c.sock(t1), c.sock(t2)
        a.bind((CID_ANY, PORT_ANY))
        b.bind((CID_ANY, PORT_ANY))
        return _delta(a.getsockname()[1], b.getsockname()[1])
    c.check('sequential.stream', lambda: seq(STREAM, STREAM))
    c.check('sequential.stream_seqpacket', lambda: seq(STREAM, SEQ))

    def skip_used():
        a, b, d = c.sock(), c.sock(), c.sock()
        a.bind((CID_ANY, PORT_ANY))
        pa = a.getsockname()[1]
        b.bind((CID_LOCAL, (pa + 1) & 0xFFFFFFFF))
        d.bind((CID_ANY, PORT_ANY))
        return _delta(pa, d.getsockname()[1])
    c.check('skips_used', skip_used)

    def autobind():
        a, b = c.sock(), c.sock()
        a.bind((CID_ANY, PORT_ANY))
        r = R(lambda: b.connect((CID_LOCAL, c.p(0))))
        return r + ' ' + _delta(a.getsockname()[1], b.getsockname()[1]) + ' ' + c.name_of(b)
    c.check('autobind_on_connect', autobind)


@sc('bind.inuse')
def _(c):
    def two(k, cid1, cid2, t1=STREAM, t2=STREAM, listen=False):
        a, b = c.sock(t1), c.sock(t2)
        a.bind((cid1, c.p(k)))
        if listen:
            a.listen(1)
        return R(lambda: b.bind((cid2, c.p(k))))
    c.check('any_then_any', lambda: two(0, CID_ANY, CID_ANY))
    c.check('any_then_1', lambda: two(1, CID_ANY, 1))
    c.check('1_then_any', lambda: two(2, 1, CID_ANY))
    c.check('1_then_1', lambda: two(3, 1, 1))
    c.check('stream_then_seqpacket', lambda: two(4, CID_ANY, CID_ANY, STREAM, SEQ))
    c.check('seqpacket_then_stream', lambda: two(5, 1, 1, SEQ, STREAM))
    c.check('listener_then_bind', lambda: two(6, CID_ANY, CID_ANY, listen=True))

    def after_close():
        a = c.sock()
        a.bind((CID_ANY, c.p(7)))
        a.close()
        return R(lambda: c.sock().bind((CID_ANY, c.p(7))))
    c.check('after_close', after_close)

    def eph():
        a, b = c.sock(), c.sock()
        a.bind((CID_ANY, PORT_ANY))
        return R(lambda: b.bind((CID_LOCAL, a.getsockname()[1])))
    c.check('ephemeral_taken', eph)

    def client_port():
        # a connected client's auto-bound port is taken too
        l = c.listener(8)
        cl = c.sock()
        cl.connect((CID_LOCAL, c.p(8)))
        c.acc(l)
        return R(lambda: c.sock().bind((CID_ANY, cl.getsockname()[1])))
    c.check('connected_client_port', client_port)

    def accepted_port():
        # accepted sockets are not in the bind table: with the listener gone, the port is free
        l, cl, sv = c.pair(9)
        l.close()
        return R(lambda: c.sock().bind((CID_ANY, c.p(9))))
    c.check('accepted_not_bound', accepted_port)


@sc('bind.state')
def _(c):
    def double(port2):
        s = c.sock()
        s.bind((CID_ANY, c.p(0) if port2 == 'same' else c.p(1)))
        return R(lambda: s.bind((CID_ANY, c.p(0) if port2 == 'same' else c.p(2))))
    c.check('double.same', lambda: double('same'))
    c.check('double.other', lambda: double('other'))

    def any_then_explicit():
        s = c.sock()
        s.bind((CID_ANY, PORT_ANY))
        return R(lambda: s.bind((CID_ANY, c.p(3))))
    c.check('double.any_then_explicit', any_then_explicit)

    def after_listen():
        l = c.listener(4)
        return R(lambda: l.bind((CID_ANY, c.p(5))))
    c.check('after_listen', after_listen)
    l, cl, sv = c.pair(6)
    c.check('accepted', lambda: sv.bind((CID_ANY, c.p(7))))
    c.check('connected_client', lambda: cl.bind((CID_ANY, c.p(8))))
    s = c.sock()
    c.check('after_failed_connect', lambda: R(lambda: s.connect((CID_LOCAL, c.p(9)))) + ' ' +
            R(lambda: s.bind((CID_ANY, c.p(10)))))
    s2 = c.sock()
    c.check('after_enodev_connect', lambda: R(lambda: s2.connect((3, c.p(11)))) + ' ' +
            R(lambda: s2.bind((CID_ANY, c.p(12)))) + ' ' + c.name_of(s2))


# ==== 4. getsockname() / getpeername() ==========================================================

@sc('getsockname')
def _(c):
    s = c.sock()
    c.check('fresh', lambda: c.name_of(s, full=True))
    c.check('fresh.seqpacket', lambda: c.name_of(c.sock(SEQ), full=True))
    s = c.sock()
    s.bind((CID_LOCAL, c.p(0)))
    c.check('bound_cid1', lambda: c.name_of(s, full=True))

    def short():
        ln, raw = raw_getname(s, addrlen=4)
        return 'len=%d bytes=%s' % (ln, raw[:6].hex())
    c.check('addrlen4', short)

    def zero():
        ln, raw = raw_getname(s, addrlen=0)
        return 'len=%d untouched=%s' % (ln, raw[:2] == b'\xAA\xAA')
    c.check('addrlen0', zero)
    c.check('null_addrlen', lambda: _sys(c_getsockname, s.fileno(),
                                        ctypes.create_string_buffer(128), None))
    c.check('null_addr', lambda: _sys(c_getsockname, s.fileno(), None,
                                     ctypes.byref(c_uint(16))))
    l, cl, sv = c.pair(1)
    c.check('client_autobound', lambda: c.name_of(cl, full=True))
    c.check('accepted_cid1', lambda: c.name_of(sv, full=True))
    c.check('listener', lambda: c.name_of(l, full=True))
    l2, cl2, sv2 = c.pair(2, cid=CID_HOST, client_port=3)
    c.check('client_bound_to_cid2_peer', lambda: c.name_of(cl2, full=True))
    c.check('accepted_cid2', lambda: c.name_of(sv2, full=True))


@sc('getpeername')
def _(c):
    s = c.sock()
    c.check('fresh', lambda: c.name_of(s, peer=True))
    s.bind((CID_ANY, c.p(0)))
    c.check('bound', lambda: c.name_of(s, peer=True))
    l = c.listener(1)
    c.check('listener', lambda: c.name_of(l, peer=True))
    l, cl, sv = c.pair(2, client_port=3)
    c.check('client', lambda: c.name_of(cl, peer=True, full=True))
    c.check('accepted', lambda: c.name_of(sv, peer=True, full=True))
    l2, cl2, sv2 = c.pair(4, cid=CID_HOST, client_port=5)
    c.check('client_cid2', lambda: c.name_of(cl2, peer=True, full=True))
    c.check('accepted_via_cid2', lambda: c.name_of(sv2, peer=True, full=True))

    # the remote address is stored as given: flags, reserved1 and svm_zero included
    def raw_peer():
        l3 = c.listener(6)
        s3 = c.sock()
        raw_connect(s3, vmaddr(CID_LOCAL, c.p(6), flags=1, res1=0x1234, zero=b'xyz'))
        c.acc(l3)
        return c.name_of(s3, peer=True, full=True)
    c.check('stored_as_given', raw_peer)

    def short():
        ln, raw = raw_getname(cl, peer=True, addrlen=6)
        return 'len=%d family=%s untouched_after_6=%s' % (ln, raw[:2].hex(),
                                                          raw[6:8] == b'\xAA\xAA')
    c.check('addrlen6', short)
    sv.shutdown(socket.SHUT_RD)
    c.check('after_shutdown', lambda: c.name_of(sv, peer=True))
    settle()
    c.check('peer_of_shutdown', lambda: c.name_of(cl, peer=True))
    s4 = c.sock()
    c.check('after_refused', lambda: R(lambda: s4.connect((CID_LOCAL, c.p(7)))) + ' ' +
            R(lambda: c.name_of(s4, peer=True)))
    l5, cl5, sv5 = c.pair(8)
    sv5.close()
    c.check('after_peer_close', lambda: str(wait_ev(cl5, POLLRDHUP)) + ' ' +
            R(lambda: c.name_of(cl5, peer=True)))


# ==== 5. connect() ============================================================================

@sc('connect.cid')
def _(c):
    l = c.listener(0, backlog=64)
    cases = [('cid1', CID_LOCAL, 0), ('cid2', CID_HOST, 0), ('cid3', 3, 0), ('cid0', 0, 0),
             ('cid_any', CID_ANY, 0), ('cid_fffffffe', 0xFFFFFFFE, 0),
             ('cid3.flag_to_host', 3, 1), ('cid1.flag_to_host', 1, 1),
             ('cid2.flag_to_host', 2, 1), ('cid1.flags2', 1, 2), ('cid1.flags0x80', 1, 0x80)]
    for name, cid, fl in cases:
        s = c.sock()

        def go(s=s, cid=cid, fl=fl):
            raw_connect(s, vmaddr(cid, c.p(0), flags=fl))
            c.acc(l)
        c.check(name, go)
    seq = c.listener(1, SEQ)
    for name, cid in (('seqpacket.cid1', 1), ('seqpacket.cid2', 2), ('seqpacket.cid3', 3)):
        s = c.sock(SEQ)

        def go(s=s, cid=cid):
            s.connect((cid, c.p(1)))
            c.acc(seq)
        c.check(name, go)


@sc('connect.addr')
def _(c):
    l = c.listener(0, backlog=64)
    for ln in (0, 8, 15, 16, 17, 128, 129):
        s = c.sock()

        def go(s=s, ln=ln):
            raw_connect(s, vmaddr(CID_LOCAL, c.p(0)), ln)
            c.acc(l)
        c.check('len%d' % ln, go)
    for fam in (0, 2, 41):
        s = c.sock()
        c.check('family%d' % fam, lambda s=s, fam=fam: raw_connect(
            s, vmaddr(CID_LOCAL, c.p(0), family=fam)))
    s = c.sock()
    c.check('null.len16', lambda: _sys(c_connect, s.fileno(), None, 16))
    s = c.sock()
    c.check('null.len0', lambda: _sys(c_connect, s.fileno(), None, 0))
    # AF_UNSPEC does not disconnect a connected stream socket
    l2, cl, sv = c.pair(1)
    c.check('unspec_on_connected', lambda: raw_connect(cl, struct.pack('<H14x', 0)))


@sc('connect.refused')
def _(c):
    s = c.sock()
    c.check('nothing', lambda: s.connect((CID_LOCAL, c.p(0))))
    c.check('nothing.so_error', lambda: gso_int(s, SOL_SOCKET, SO_ERROR))
    c.check('nothing.poll', lambda: pmask(s))
    c.check('nothing.getsockname', lambda: c.name_of(s))
    c.check('nothing.recv', lambda: s.recv(10))
    c.check('nothing.send', lambda: s.send(b'x'))
    c.check('nothing.siocoutq', lambda: ioctl_int(s, SIOCOUTQ))
    c.check('nothing.seqpacket', lambda: c.sock(SEQ).connect((CID_LOCAL, c.p(1))))
    c.check('nothing.cid2', lambda: c.sock().connect((CID_HOST, c.p(2))))
    b = c.sock()
    b.bind((CID_ANY, c.p(3)))
    c.check('bound_not_listening', lambda: c.sock().connect((CID_LOCAL, c.p(3))))
    c.check('port_any', lambda: c.sock().connect((CID_LOCAL, PORT_ANY)))
    c.listener(4, STREAM)
    c.listener(5, SEQ)
    c.check('seqpacket_to_stream_listener', lambda: c.sock(SEQ).connect((CID_LOCAL, c.p(4))))
    c.check('stream_to_seqpacket_listener', lambda: c.sock().connect((CID_LOCAL, c.p(5))))
    l1 = c.listener(6, cid=CID_LOCAL)
    c.check('cid2_to_cid1_listener', lambda: c.sock().connect((CID_HOST, c.p(6))))

    def ok():
        c.sock().connect((CID_LOCAL, c.p(6)))
        c.acc(l1)
    c.check('cid1_to_cid1_listener', ok)
    l7 = c.listener(7)
    l7.close()
    c.check('closed_listener', lambda: c.sock().connect((CID_LOCAL, c.p(7))))

    def selfc(t):
        s = c.sock(t)
        s.bind((CID_ANY, c.p(8 if t == STREAM else 9)))
        return R(lambda: s.connect((CID_LOCAL, c.p(8 if t == STREAM else 9)))) + \
            ' so_error=' + str(gso_int(s, SOL_SOCKET, SO_ERROR)) + ' ' + pmask(s)
    c.check('self.stream', lambda: selfc(STREAM))
    c.check('self.seqpacket', lambda: selfc(SEQ))


@sc('connect.state')
def _(c):
    l, cl, sv = c.pair(0)
    c.check('twice', lambda: cl.connect((CID_LOCAL, c.p(0))))
    c.check('twice.other', lambda: cl.connect((CID_LOCAL, c.p(1))))
    c.check('twice.bad_addr', lambda: raw_connect(cl, vmaddr(1, 1, family=2)))
    c.check('accepted', lambda: sv.connect((CID_LOCAL, c.p(0))))
    c.check('listening', lambda: l.connect((CID_LOCAL, c.p(0))))
    c.check('listening.bad_addr', lambda: raw_connect(l, vmaddr(1, 1, family=2)))
    l2, cl2, sv2 = c.pair(2)
    cl2.shutdown(socket.SHUT_WR)
    c.check('after_shutdown', lambda: cl2.connect((CID_LOCAL, c.p(2))))
    l3, cl3, sv3 = c.pair(3)
    sv3.close()
    wait_ev(cl3, POLLRDHUP)
    settle()
    c.check('after_peer_close', lambda: cl3.connect((CID_LOCAL, c.p(3))))

    def retry():
        s = c.sock()
        r1 = R(lambda: s.connect((CID_LOCAL, c.p(4))))
        p1 = s.getsockname()[1]
        l4 = c.listener(4)
        r2 = R(lambda: s.connect((CID_LOCAL, c.p(4))))
        c.acc(l4)
        return '%s %s same_port=%s' % (r1, r2, 'yes' if s.getsockname()[1] == p1 else 'no')
    c.check('retry_after_reset', retry)

    def enodev_retry():
        l5 = c.listener(5)
        s = c.sock()
        r1 = R(lambda: s.connect((3, c.p(5))))
        r2 = R(lambda: s.connect((CID_LOCAL, c.p(5))))
        c.acc(l5)
        return '%s %s' % (r1, r2)
    c.check('enodev_then_ok', enodev_retry)
    e = c.sock()
    c.check('enodev.state', lambda: R(lambda: e.connect((3, c.p(7)))) + ' ' + pmask(e) + ' ' +
            R(lambda: c.name_of(e, peer=True)) + ' ' + R(lambda: e.send(b'x')) + ' ' +
            R(lambda: e.listen(1)))

    def to_cid2_then_cid1():
        # the transport is kept for the retry; both go over loopback
        l6 = c.listener(6, cid=CID_LOCAL)
        s = c.sock()
        r1 = R(lambda: s.connect((CID_HOST, c.p(6))))
        r2 = R(lambda: s.connect((CID_LOCAL, c.p(6))))
        c.acc(l6)
        return '%s %s' % (r1, r2)
    c.check('refused_cid2_then_cid1', to_cid2_then_cid1)


@sc('connect.nonblock')
def _(c):
    l = c.listener(0)
    s = c.sock(nonblock=True)
    c.check('ok.connect', lambda: cex(s, (CID_LOCAL, c.p(0))))
    c.check('ok.poll', lambda: wait_mask(s, POLLOUT))
    c.check('ok.so_error', lambda: gso_int(s, SOL_SOCKET, SO_ERROR))
    c.check('ok.getpeername', lambda: c.name_of(s, peer=True))
    c.check('ok.connect_again', lambda: cex(s, (CID_LOCAL, c.p(0))))
    c.check('ok.accept', lambda: c.acc(l) and None)

    s = c.sock(nonblock=True)
    c.check('refused.connect', lambda: cex(s, (CID_LOCAL, c.p(1))))
    c.check('refused.poll', lambda: wait_mask(s, POLLERR))
    c.check('refused.connect_again', lambda: cex(s, (CID_LOCAL, c.p(1))))
    c.check('refused.getpeername', lambda: c.name_of(s, peer=True))
    c.check('refused.recv', lambda: s.recv(10))
    c.check('refused.send', lambda: s.send(b'x'))
    c.check('refused.listen', lambda: s.listen(1))
    c.check('refused.so_error', lambda: ename(gso_int(s, SOL_SOCKET, SO_ERROR)))
    c.check('refused.so_error_again', lambda: ename(gso_int(s, SOL_SOCKET, SO_ERROR)))
    c.check('refused.poll_after_so_error', lambda: pmask(s))

    # a blocking connect() after a failed non-blocking one, without reading SO_ERROR
    s2 = c.sock(nonblock=True)
    s2.connect_ex((CID_LOCAL, c.p(2)))
    wait_ev(s2, POLLERR)
    s2.setblocking(True)
    c.check('refused.then_blocking', lambda: s2.connect((CID_LOCAL, c.p(2))))
    l3 = c.listener(3)
    c.check('refused.then_blocking.then_ok',
            lambda: (s2.connect((CID_LOCAL, c.p(3))), c.acc(l3)) and None)

    # ... and after reading SO_ERROR: still SS_CONNECTING, so the blocking call just waits
    s3 = c.sock(nonblock=True)
    sso(s3, LVL, SO_VM_CT_OLD, tv(0, 300000))
    s3.connect_ex((CID_LOCAL, c.p(4)))
    wait_ev(s3, POLLERR)
    gso_int(s3, SOL_SOCKET, SO_ERROR)
    s3.setblocking(True)
    c.check('refused.so_error_read.then_blocking', lambda: s3.connect((CID_LOCAL, c.p(4))))
    c.check('refused.so_error_read.then_blocking.poll', lambda: pmask(s3))
    time.sleep(0.4)  # the first (non-blocking) attempt's connect timer must be over
    c.check('refused.so_error_read.third', lambda: s3.connect((CID_LOCAL, c.p(4))))

    s4 = c.sock(nonblock=True)
    s4.connect_ex((CID_LOCAL, c.p(5)))
    wait_ev(s4, POLLERR)
    c.check('refused.shutdown', lambda: s4.shutdown(socket.SHUT_RDWR))
    c.check('refused.shutdown.connect', lambda: cex(s4, (CID_LOCAL, c.p(5))))

    s5 = c.sock(SEQ, nonblock=True)
    ls = c.listener(6, SEQ)
    c.check('seqpacket.connect', lambda: cex(s5, (CID_LOCAL, c.p(6))))
    c.check('seqpacket.poll', lambda: wait_mask(s5, POLLOUT))
    c.check('seqpacket.accept', lambda: c.acc(ls) and None)
    s6 = c.sock(nonblock=True)
    c.check('enodev', lambda: cex(s6, (3, c.p(7))))


# ==== 6. listen() / accept() ==================================================================

@sc('listen')
def _(c):
    c.check('unbound', lambda: c.sock().listen(1))
    c.check('unbound.seqpacket', lambda: c.sock(SEQ).listen(1))
    s = c.sock()
    s.bind((CID_ANY, c.p(0)))
    c.check('bound', lambda: s.listen(1))
    c.check('twice', lambda: s.listen(5))
    c.check('poll', lambda: pmask(s))
    c.check('so_acceptconn', lambda: gso_int(s, SOL_SOCKET, SO_ACCEPTCONN))
    c.check('so_acceptconn.fresh', lambda: gso_int(c.sock(), SOL_SOCKET, SO_ACCEPTCONN))
    l, cl, sv = c.pair(1)
    c.check('connected', lambda: cl.listen(1))
    c.check('accepted', lambda: sv.listen(1))
    c.check('so_acceptconn.connected', lambda: gso_int(cl, SOL_SOCKET, SO_ACCEPTCONN))
    l2, cl2, sv2 = c.pair(2)
    cl2.shutdown(socket.SHUT_RDWR)
    c.check('after_shutdown', lambda: cl2.listen(1))

    # a socket whose blocking connect failed is bound (auto-bind) and SS_UNCONNECTED
    f = c.sock()
    f.bind((CID_ANY, c.p(3)))
    c.check('after_failed_connect', lambda: R(lambda: f.connect((CID_LOCAL, c.p(4)))) + ' ' +
            R(lambda: f.listen(1)))
    c.check('after_failed_connect.siocoutq', lambda: ioctl_int(f, SIOCOUTQ))

    def use():
        x = c.sock()
        x.connect((CID_LOCAL, c.p(3)))
        y = c.acc(f)
        x.send(b'hi')
        return recv_all(y, 2)
    c.check('after_failed_connect.accepts', use)
    g = c.sock(nonblock=True)
    g.bind((CID_ANY, c.p(5)))
    g.connect_ex((CID_LOCAL, c.p(6)))
    wait_ev(g, POLLERR)
    c.check('after_failed_nonblock_connect', lambda: g.listen(1))


def backlog_run(c, k, calls, n, typ=STREAM, accept_after=None):
    """Listens with each backlog in `calls` (via libc, so negative values pass), then makes n
    blocking connects; returns their results joined by commas."""
    l = c.sock(typ)
    l.bind((CID_ANY, c.p(k)))
    for b in calls:
        _sys(c_listen, l.fileno(), b)
    out = []
    for i in range(n):
        if accept_after is not None and i == accept_after:
            c.acc(l)
            out.append('accept')
        s = c.sock(typ)
        out.append(R(lambda: s.connect((CID_LOCAL, c.p(k)))).replace('errno=', ''))
    return ','.join(out)


@sc('listen.backlog')
def _(c):
    c.check('b0', lambda: backlog_run(c, 0, [0], 2))
    c.check('b1', lambda: backlog_run(c, 1, [1], 3))
    c.check('b2', lambda: backlog_run(c, 2, [2], 4))
    c.check('b-1', lambda: backlog_run(c, 3, [-1], 4))
    c.check('relisten_0_2', lambda: backlog_run(c, 4, [0, 2], 4))
    c.check('accept_frees_slot', lambda: backlog_run(c, 5, [0], 3, accept_after=2))
    c.check('seqpacket.b0', lambda: backlog_run(c, 6, [0], 2, typ=SEQ))

    def shrink():
        l = c.sock()
        l.bind((CID_ANY, c.p(7)))
        l.listen(2)
        r1 = R(lambda: c.sock().connect((CID_LOCAL, c.p(7))))
        l.listen(0)
        r2 = R(lambda: c.sock().connect((CID_LOCAL, c.p(7))))
        return '%s,%s' % (r1, r2)
    c.check('shrink_2_0', shrink)

    def closed_pending():
        # a pending connection whose client has closed still takes its slot
        l = c.sock()
        l.bind((CID_ANY, c.p(8)))
        l.listen(0)
        x = c.sock()
        r1 = R(lambda: x.connect((CID_LOCAL, c.p(8))))
        x.close()
        settle()
        r2 = R(lambda: c.sock().connect((CID_LOCAL, c.p(8))))
        r3 = R(lambda: acc_r(c, l))
        r4 = R(lambda: c.sock().connect((CID_LOCAL, c.p(8))))
        return '%s,%s,%s,%s' % (r1, r2, r3, r4)
    c.check('closed_pending_counts', closed_pending)


@sc('accept')
def _(c):
    l = c.listener(0)
    c.check('poll.empty', lambda: pmask(l))
    l.setblocking(False)
    c.check('nonblock_empty', lambda: acc_r(c, l))
    l.setblocking(True)
    set_timeo(l, 0.2, None)

    c.check('rcvtimeo', lambda: waited(lambda: acc_r(c, l), 0.15))
    c.check('not_listening.fresh', lambda: acc_r(c, c.sock()))
    b = c.sock()
    b.bind((CID_ANY, c.p(1)))
    c.check('not_listening.bound', lambda: acc_r(c, b))
    lp, cl, sv = c.pair(2)
    c.check('not_listening.connected', lambda: acc_r(c, cl))
    c.check('not_listening.accepted', lambda: acc_r(c, sv))
    c.check('not_listening.seqpacket_fresh', lambda: acc_r(c, c.sock(SEQ)))

    # pending connection: listener readable, accept4 flags, returned address, FIFO order
    l3 = c.listener(3)
    cs = []
    for i in range(3):
        x = c.sock()
        x.bind((CID_ANY, c.p(10 + i)))
        x.connect((CID_LOCAL, c.p(3)))
        cs.append(x)
    c.check('poll.pending', lambda: wait_mask(l3, POLLIN))

    def acc4(flags):
        buf = ctypes.create_string_buffer(b'\xAA' * 128, 128)
        ln = c_uint(128)
        fd = c.track(_sys(c_accept4, l3.fileno(), buf, ctypes.byref(ln), flags))
        return 'len=%d %s nonblock=%d cloexec=%d' % (ln.value, c.faddr(buf.raw),
                                                      nonblock_flag(fd), cloexec_flag(fd))
    c.check('accept4.plain', lambda: acc4(0))
    c.check('accept4.nonblock_cloexec', lambda: acc4(SOCK_NONBLOCK | SOCK_CLOEXEC))

    def noaddr():
        fd = c.track(_sys(c_accept4, l3.fileno(), None, None, 0))
        return c.name_of(fd, peer=True)
    c.check('accept4.null_addr', noaddr)
    c.check('poll.drained', lambda: pmask(l3))

    # a connection whose client closed before accept() is still returned
    l4 = c.listener(4)
    x = c.sock()
    x.connect((CID_LOCAL, c.p(4)))
    x.close()
    settle()
    c.check('peer_closed_before_accept', lambda: acc_r(c, l4))
    y = c.res[-1]
    c.check('peer_closed_before_accept.poll', lambda: pmask(y))
    c.check('peer_closed_before_accept.recv', lambda: y.recv(10))
    c.check('peer_closed_before_accept.getpeername', lambda: c.name_of(y, peer=True))
    c.check('peer_closed_before_accept.send',
            lambda: with_sigpipe(lambda: y.send(b'x', MSG_NOSIGNAL)))

    # the listener's non-blocking flag is not inherited by plain accept()
    l5 = c.listener(5)
    c.sock().connect((CID_LOCAL, c.p(5)))
    l5.setblocking(False)

    def inherit():
        fd = c.track(_sys(c_accept4, l5.fileno(), None, None, 0))
        return 'nonblock=%d' % nonblock_flag(fd)
    c.check('nonblock_not_inherited', inherit)


@sc('accept.eintr')
def _(c):
    l = c.listener(0)
    set_timeo(l, 0, None)  # no timeout: -ERESTARTSYS, which becomes EINTR without SA_RESTART

    def go(restart=False, timeo=0):
        set_timeo(l, timeo, None)
        with Alarm(0.15, restart) as a:
            r = R(lambda: _sys(c_accept4, l.fileno(), None, None, 0))
        return '%s handler=%d' % (r, a.count)
    c.check('no_timeout', lambda: go())
    c.check('rcvtimeo', lambda: go(timeo=2.0))
    c.check('rcvtimeo.sa_restart', lambda: go(restart=True, timeo=2.0))


# ==== 7. shutdown() ===========================================================================

@sc('shutdown')
def _(c):
    s = c.sock()
    for how in (0, 1, 2, 3, -1):
        c.check('fresh.how%d' % how, lambda how=how: _sys(c_shutdown, s.fileno(), how))
    b = c.sock()
    b.bind((CID_ANY, c.p(0)))
    c.check('bound', lambda: b.shutdown(socket.SHUT_RDWR))
    l = c.listener(1)
    for how in (0, 1, 2, 3):
        c.check('listener.how%d' % how, lambda how=how: _sys(c_shutdown, l.fileno(), how))
    c.check('listener.still_listening', lambda: pmask(l))
    lp, cl, sv = c.pair(2)
    for how in (3, 100, -1):
        c.check('connected.how%d' % how, lambda how=how: _sys(c_shutdown, cl.fileno(), how))
    c.check('connected.rd', lambda: cl.shutdown(socket.SHUT_RD))
    c.check('connected.rd_again', lambda: cl.shutdown(socket.SHUT_RD))
    c.check('connected.wr', lambda: cl.shutdown(socket.SHUT_WR))
    c.check('connected.rdwr', lambda: cl.shutdown(socket.SHUT_RDWR))
    c.check('connected.getpeername', lambda: c.name_of(cl, peer=True))
    c.check('connected.connect', lambda: cl.connect((CID_LOCAL, c.p(2))))
    c.check('connected.listen', lambda: cl.listen(1))
    c.check('accepted', lambda: sv.shutdown(socket.SHUT_WR))
    f = c.sock()
    f.connect_ex((CID_LOCAL, c.p(3)))
    c.check('after_failed_connect', lambda: f.shutdown(socket.SHUT_RDWR))
    f2 = c.sock(SEQ)
    f2.connect_ex((CID_LOCAL, c.p(4)))
    c.check('after_failed_connect.seqpacket', lambda: f2.shutdown(socket.SHUT_RDWR))


@sc('shutdown.effects')
def _(c):
    # local SHUT_RD: recv returns 0 at once, even with data queued; send still works
    l, a, b = c.pair(0)
    b.send(b'hello')
    wait_ev(a, POLLIN)
    a.shutdown(socket.SHUT_RD)
    c.check('shut_rd.recv', lambda: a.recv(10))
    c.check('shut_rd.recv_dontwait', lambda: a.recv(10, MSG_DONTWAIT))
    c.check('shut_rd.send', lambda: a.send(b'abc'))
    c.check('shut_rd.peer_recv', lambda: recv_all(b, 3))
    settle()
    c.check('shut_rd.peer_send', lambda: with_sigpipe(lambda: b.send(b'x')))
    c.check('shut_rd.peer_poll', lambda: pmask(b))

    # local SHUT_WR: EPIPE (+SIGPIPE) locally, data then EOF at the peer
    l, a, b = c.pair(1)
    a.send(b'bye')
    a.shutdown(socket.SHUT_WR)
    c.check('shut_wr.send', lambda: with_sigpipe(lambda: a.send(b'x')))
    c.check('shut_wr.send_nosignal', lambda: with_sigpipe(lambda: a.send(b'x', MSG_NOSIGNAL)))
    c.check('shut_wr.send_len0', lambda: with_sigpipe(lambda: a.send(b'')))
    c.check('shut_wr.peer_recv', lambda: drain(b))
    c.check('shut_wr.peer_recv_again', lambda: b.recv(10))
    c.check('shut_wr.peer_send', lambda: b.send(b'back'))
    c.check('shut_wr.recv', lambda: recv_all(a, 4))

    # seqpacket
    l, a, b = c.pair(2, SEQ)
    a.send(b'm1')
    a.shutdown(socket.SHUT_WR)
    c.check('seqpacket.shut_wr.send', lambda: with_sigpipe(lambda: a.send(b'x')))
    c.check('seqpacket.shut_wr.peer_recv', lambda: b.recv(10))
    c.check('seqpacket.shut_wr.peer_recv_eof', lambda: b.recv(10))

    # a server that shuts down right after accept, racing the connect's completion: the
    # connecting side must see the connection established first, never a protocol error
    l = c.listener(3, backlog=64)
    done = []

    def server():
        for _ in range(200):
            try:
                s, _a = l.accept()
            except OSError:
                return
            try:
                s.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            done.append(s)
    t = threading.Thread(target=server, daemon=True)
    t.start()

    def race():
        errs = {}
        for _ in range(200):
            s = socket.socket(AF_VSOCK, STREAM)
            set_timeo(s, 3, 3)
            try:
                s.connect((CID_LOCAL, c.p(3)))
            except OSError as e:
                errs[ename(e.errno)] = errs.get(ename(e.errno), 0) + 1
            s.close()
        t.join(10)
        for s in done:
            s.close()
        return 'errors=%s' % (','.join('%s:%d' % kv for kv in sorted(errs.items())) or 'none')
    c.check('shut_rd_after_accept_race', race)


# ==== 8. send / recv ==========================================================================

@sc('send.errors')
def _(c):
    s = c.sock()
    c.check('unconnected', lambda: with_sigpipe(lambda: s.send(b'x')))
    c.check('unconnected.len0', lambda: s.send(b''))
    c.check('unconnected.oob', lambda: s.send(b'x', MSG_OOB))
    c.check('unconnected.sendto', lambda: s.sendto(b'x', (CID_LOCAL, c.p(0))))
    c.check('unconnected.write', lambda: os.write(s.fileno(), b'x'))
    b = c.sock()
    b.bind((CID_ANY, c.p(1)))
    c.check('bound', lambda: b.send(b'x'))
    l = c.listener(2)
    c.check('listener', lambda: l.send(b'x'))
    c.check('listener.sendto', lambda: l.sendto(b'x', (CID_LOCAL, c.p(2))))
    s2 = c.sock(SEQ)
    c.check('seqpacket.unconnected', lambda: s2.send(b'x'))
    lp, cl, sv = c.pair(3)
    c.check('connected.sendto', lambda: cl.sendto(b'x', (CID_LOCAL, c.p(3))))
    c.check('connected.sendto_other', lambda: cl.sendto(b'x', (CID_LOCAL, c.p(4))))
    c.check('connected.sendmsg_name',
            lambda: sendmsg_raw(cl, [b'x'], 0, vmaddr(CID_LOCAL, c.p(3))))
    c.check('connected.oob', lambda: cl.send(b'x', MSG_OOB))
    c.check('connected.len0', lambda: cl.send(b''))
    c.check('connected.sendmsg_no_iov', lambda: sendmsg_raw(cl, []))
    c.check('connected.peer_got_nothing', lambda: sv.recv(10, MSG_DONTWAIT))
    lq, ql, qs = c.pair(5, SEQ)
    c.check('seqpacket.connected.sendto', lambda: ql.sendto(b'x', (CID_LOCAL, c.p(5))))
    c.check('seqpacket.connected.oob', lambda: ql.send(b'x', MSG_OOB))


@sc('recv.errors')
def _(c):
    s = c.sock()
    c.check('unconnected', lambda: s.recv(10))
    c.check('unconnected.len0', lambda: rrecv(s, 0))
    c.check('unconnected.oob', lambda: s.recv(10, MSG_OOB))
    c.check('unconnected.dontwait', lambda: s.recv(10, MSG_DONTWAIT))
    c.check('unconnected.read', lambda: os.read(s.fileno(), 10))
    l = c.listener(0)
    c.check('listener', lambda: l.recv(10))
    c.check('seqpacket.unconnected', lambda: c.sock(SEQ).recv(10))
    lp, cl, sv = c.pair(1)
    c.check('connected.len0', lambda: rrecv(cl, 0))
    c.check('connected.dontwait_empty', lambda: cl.recv(10, MSG_DONTWAIT))
    c.check('connected.oob', lambda: cl.recv(10, MSG_OOB))
    c.check('connected.errqueue_empty', lambda: recvmsg_raw(cl, 10, MSG_ERRQUEUE, 64))
    c.check('unconnected.errqueue_empty', lambda: recvmsg_raw(s, 10, MSG_ERRQUEUE, 64))
    set_timeo(cl, 0.2, None)

    c.check('connected.rcvtimeo', lambda: waited(lambda: cl.recv(10), 0.15))
    cl.setblocking(False)
    c.check('connected.nonblocking_fd', lambda: cl.recv(10))
    cl.setblocking(True)

    def fionbio():
        _sys(c_ioctl, cl.fileno(), FIONBIO, ctypes.byref(c_int(1)))
        r = R(lambda: _sys(c_recv, cl.fileno(), ctypes.create_string_buffer(10), 10, 0))
        _sys(c_ioctl, cl.fileno(), FIONBIO, ctypes.byref(c_int(0)))
        return r
    c.check('connected.fionbio', fionbio)
    c.check('waitall_bufsize', lambda: cl.recv(262144, MSG_WAITALL))
    c.check('waitall_bufsize-1', lambda: cl.recv(262143, MSG_WAITALL | MSG_DONTWAIT))
    c.check('waitall_huge', lambda: cl.recv(1 << 20, MSG_WAITALL | MSG_DONTWAIT))
    c.check('waitall_unconnected', lambda: s.recv(262144, MSG_WAITALL))


@sc('recv.data')
def _(c):
    l, a, b = c.pair(0)
    b.send(b'abcdefghij')
    wait_ev(a, POLLIN)
    settle()
    c.check('partial.1', lambda: a.recv(3))
    c.check('partial.2', lambda: a.recv(3))
    c.check('partial.3', lambda: a.recv(100))
    c.check('partial.empty', lambda: a.recv(100, MSG_DONTWAIT))

    b.send(b'abc')
    b.send(b'def')
    settle()
    c.check('coalesced', lambda: a.recv(100))

    b.send(b'hello world')
    settle()
    c.check('peek', lambda: a.recv(5, MSG_PEEK))
    c.check('peek.again', lambda: a.recv(100, MSG_PEEK))
    c.check('peek.waitall', lambda: a.recv(100, MSG_PEEK | MSG_WAITALL | MSG_DONTWAIT))
    c.check('peek.len0', lambda: rrecv(a, 0, MSG_PEEK))
    c.check('len0_with_data', lambda: rrecv(a, 0))
    c.check('trunc', lambda: recvmsg_raw(a, 3, MSG_TRUNC), fmt_recvmsg)
    c.check('after_trunc', lambda: a.recv(100))

    b.send(b'0123456789')
    settle()
    c.check('recvmsg.flags', lambda: recvmsg_raw(a, 4, 0), fmt_recvmsg)
    c.check('recvmsg.namelen', lambda: 'namelen=%d' % recvmsg_raw(a, 2, 0, 0, 16)[3])

    def recvfrom():
        buf = ctypes.create_string_buffer(16)
        nb = ctypes.create_string_buffer(b'\xAA' * 32, 32)
        ln = c_uint(32)
        r = _sys(c_recvfrom, a.fileno(), buf, 16, 0, nb, ctypes.byref(ln))
        return 'ret=%d addrlen=%d data=%r' % (r, ln.value, buf.raw[:r])
    c.check('recvfrom.addrlen', recvfrom)
    c.check('read', lambda: os.write(b.fileno(), b'xyz') and (settle(), os.read(a.fileno(), 10))[1])

    def vec():
        os.writev(b.fileno(), [b'ab', b'cd', b'ef'])
        settle()
        b1, b2 = bytearray(1), bytearray(10)
        n = os.readv(a.fileno(), [b1, b2])
        return 'ret=%d %r %r' % (n, bytes(b1), bytes(b2[:n - 1]))
    c.check('writev_readv', vec)

    def multi_iov():
        r = sendmsg_raw(b, [b'12', b'', b'345'])
        settle()
        return 'ret=%d %r' % (r, a.recv(100))
    c.check('sendmsg_iov', multi_iov)


@sc('recv.waitall')
def _(c):
    l, a, b = c.pair(0)
    b.send(b'12345')
    settle()
    set_timeo(a, 0.3, None)
    c.check('partial_timeout', lambda: a.recv(100, MSG_WAITALL))
    set_timeo(a, 3.0, None)
    b.send(b'abcde')
    bg(0.2, lambda: b.send(b'fghij'))
    c.check('completes', lambda: a.recv(10, MSG_WAITALL))
    b.send(b'xy')
    settle()
    c.check('dontwait', lambda: a.recv(10, MSG_WAITALL | MSG_DONTWAIT))
    b.send(b'zz')
    b.shutdown(socket.SHUT_WR)
    settle()
    c.check('eof', lambda: a.recv(10, MSG_WAITALL))
    c.check('eof.again', lambda: a.recv(10, MSG_WAITALL))


@sc('recv.rcvlowat')
def _(c):
    s = c.sock()
    c.check('default', lambda: gso_int(s, SOL_SOCKET, SO_RCVLOWAT))
    for v in (0, 100, 262144, 262145, -1, 1 << 30):
        c.check('set%d' % v, lambda v=v: R(lambda: ssi(s, SOL_SOCKET, SO_RCVLOWAT, v)) +
                ' get=%d' % gso_int(s, SOL_SOCKET, SO_RCVLOWAT))
    c.check('set.optlen2', lambda: sso(s, SOL_SOCKET, SO_RCVLOWAT, b'\x05\x00'))
    s2 = c.sock()
    sso(s2, LVL, SO_VM_BUF, u64(1000))
    c.check('after_bufsize1000.1001', lambda: ssi(s2, SOL_SOCKET, SO_RCVLOWAT, 1001))
    c.check('after_bufsize1000.1000', lambda: ssi(s2, SOL_SOCKET, SO_RCVLOWAT, 1000))
    q = c.sock(SEQ)
    for v in (-1, 1 << 20, 0):
        c.check('seqpacket.set%d' % v, lambda v=v: R(lambda: ssi(q, SOL_SOCKET, SO_RCVLOWAT, v))
                + ' get=%d' % gso_int(q, SOL_SOCKET, SO_RCVLOWAT))

    l, a, b = c.pair(0)
    ssi(a, SOL_SOCKET, SO_RCVLOWAT, 10)
    b.send(b'12345')
    settle()
    c.check('below.poll', lambda: pmask(a))
    c.check('below.recv_dontwait', lambda: a.recv(100, MSG_DONTWAIT))
    b.send(b'12345')
    settle()
    set_timeo(a, 0.3, None)

    c.check('below.recv_blocking', lambda: waited(lambda: a.recv(100), 0.25))
    b.send(b'1234567890AB')
    settle()
    c.check('above.poll', lambda: pmask(a))
    c.check('above.recv', lambda: a.recv(100))
    c.check('lowat_eq_bufsize', lambda: R(lambda: ssi(a, SOL_SOCKET, SO_RCVLOWAT, 262144)) +
            ' ' + R(lambda: a.recv(300000, MSG_DONTWAIT)) + ' ' +
            R(lambda: a.recv(10, MSG_DONTWAIT)))

    lq, qa, qb = c.pair(1, SEQ)
    ssi(qa, SOL_SOCKET, SO_RCVLOWAT, 1000)
    qb.send(b'short')
    settle()
    c.check('seqpacket.poll_below', lambda: pmask(qa))
    c.check('seqpacket.recv_below', lambda: qa.recv(100, MSG_DONTWAIT))


@sc('recv.peer_gone')
def _(c):
    # data, then EOF, after the peer's SHUT_WR and after its close
    l, a, b = c.pair(0)
    b.send(b'abc')
    b.shutdown(socket.SHUT_WR)
    wait_ev(a, POLLRDHUP)
    settle()
    c.check('shut_wr.recv1', lambda: a.recv(100))
    c.check('shut_wr.recv2', lambda: a.recv(100))
    c.check('shut_wr.recv_dontwait', lambda: a.recv(100, MSG_DONTWAIT))
    c.check('shut_wr.send', lambda: a.send(b'still'))
    l, a, b = c.pair(1)
    b.send(b'last words')
    b.close()
    wait_ev(a, POLLRDHUP)
    settle()
    c.check('close.poll', lambda: pmask(a))
    c.check('close.recv1', lambda: a.recv(4))
    c.check('close.recv2', lambda: a.recv(100))
    c.check('close.recv3', lambda: a.recv(100))
    c.check('close.poll_drained', lambda: pmask(a))
    c.check('close.send', lambda: with_sigpipe(lambda: a.send(b'x')))
    c.check('close.sendto', lambda: a.sendto(b'x', (CID_LOCAL, c.p(1))))
    l, a, b = c.pair(2)
    b.close()
    wait_ev(a, POLLRDHUP)
    settle()
    c.check('close_nodata.recv', lambda: a.recv(100))
    c.check('close_nodata.recv_dontwait', lambda: a.recv(100, MSG_DONTWAIT))
    c.check('close_nodata.recv_len0', lambda: rrecv(a, 0))
    c.check('close_nodata.oob', lambda: a.recv(10, MSG_OOB))
    c.check('close_nodata.sendto', lambda: a.sendto(b'x', (CID_LOCAL, c.p(2))))
    c.check('close_nodata.send_nosignal',
            lambda: with_sigpipe(lambda: a.send(b'x', MSG_NOSIGNAL)))
    c.check('close_nodata.send', lambda: with_sigpipe(lambda: a.send(b'x')))
    c.check('close_nodata.write', lambda: with_sigpipe(lambda: os.write(a.fileno(), b'x')))
    c.check('close_nodata.send_len0', lambda: with_sigpipe(lambda: a.send(b'')))
    c.check('close_nodata.siocoutq', lambda: ioctl_int(a, SIOCOUTQ))
    c.check('close_nodata.so_error', lambda: gso_int(a, SOL_SOCKET, SO_ERROR))
    l, a, b = c.pair(3, SEQ)
    b.send(b'm1')
    b.send(b'm2')
    b.close()
    wait_ev(a, POLLRDHUP)
    settle()
    c.check('seqpacket.close.recv1', lambda: a.recv(100))
    c.check('seqpacket.close.recv2', lambda: a.recv(100))
    c.check('seqpacket.close.recv3', lambda: a.recv(100))
    c.check('seqpacket.close.send', lambda: with_sigpipe(lambda: a.send(b'x')))


@sc('send.flow')
def _(c):
    # the peer's receive buffer (256 KiB) bounds what can be in flight
    l, a, b = c.pair(0)
    big = b'\x5a' * 300000
    c.check('nonblock_big', lambda: a.send(big, MSG_DONTWAIT))
    c.check('nonblock_full', lambda: a.send(b'x', MSG_DONTWAIT))
    settle()
    c.check('full.poll', lambda: pmask(a))
    c.check('full.peer_poll', lambda: pmask(b))
    set_timeo(a, None, 0.2)

    c.check('full.sndtimeo', lambda: waited(lambda: a.send(b'x' * 10), 0.15))
    got = recv_all(b, 100000)
    settle()
    c.check('after_peer_read_100000', lambda: 'read=%d ' % len(got) +
            R(lambda: a.send(b'y', MSG_DONTWAIT)))
    got2 = recv_all(b, 262144 - 100000)
    settle()
    c.check('after_peer_read_all', lambda: 'read=%d ' % len(got2) + pmask(a) + ' ' +
            R(lambda: a.send(b'z' * 1000, MSG_DONTWAIT)))
    settle()
    c.check('siocoutq_settled', lambda: ioctl_int(a, SIOCOUTQ))
    c.check('peer.siocoutq', lambda: ioctl_int(b, SIOCOUTQ))

    # credit comes back early when the reader's queue is below its SO_RCVLOWAT...
    l, a, b = c.pair(5)
    ssi(b, SOL_SOCKET, SO_RCVLOWAT, 200000)
    a.send(b'\x01' * 262144, MSG_DONTWAIT)
    settle()
    c.check('credit.low_rx_bytes', lambda: 'read=%d ' % len(recv_all(b, 100000)) +
            (settle() or '') + R(lambda: a.send(b'\x02' * 200000, MSG_DONTWAIT)))
    # ... and when SO_RCVLOWAT is raised above what is queued
    l, a, b = c.pair(6)
    a.send(b'\x01' * 262144, MSG_DONTWAIT)
    settle()
    c.check('credit.set_rcvlowat', lambda: 'read=%d ' % len(recv_all(b, 100000)) +
            (settle() or '') + R(lambda: a.send(b'\x02', MSG_DONTWAIT)) + ' ' +
            R(lambda: ssi(b, SOL_SOCKET, SO_RCVLOWAT, 200000)) + ' ' +
            (settle() or '') + R(lambda: a.send(b'\x03' * 200000, MSG_DONTWAIT)))
    # a peek gives no credit back
    l, a, b = c.pair(7)
    a.send(b'\x01' * 262144, MSG_DONTWAIT)
    settle()
    c.check('credit.peek', lambda: 'peeked=%d ' % len(b.recv(262144, MSG_PEEK)) +
            (settle() or '') + R(lambda: a.send(b'\x02', MSG_DONTWAIT)))
    # seqpacket: every message read sends a credit update
    l, a, b = c.pair(8, SEQ)
    for _ in range(4):
        a.send(b'\x05' * 65536, MSG_DONTWAIT)
    settle()
    c.check('credit.seqpacket', lambda: R(lambda: a.send(b'x', MSG_DONTWAIT)) + ' read=%d ' %
            len(b.recv(70000)) + (settle() or '') +
            R(lambda: a.send(b'\x06' * 65536, MSG_DONTWAIT)))

    # blocking send of more than the buffer completes as the peer reads
    l, a, b = c.pair(1)
    t = [None]
    bg(0.1, lambda: t.__setitem__(0, recv_all(b, 400000, timeout=5)))
    c.check('blocking_big', lambda: a.send(b'\x33' * 400000))
    time.sleep(0.1)
    for _ in range(50):
        if t[0] is not None:
            break
        time.sleep(0.1)
    c.check('blocking_big.peer_got', lambda: 'len=%d' % len(t[0] or b''))

    # the buffer size set on the receiver after connect is advertised to the sender
    l, a, b = c.pair(2)
    sso(b, LVL, SO_VM_BUF, u64(4096))
    settle()
    c.check('peer_bufsize_4096', lambda: a.send(b'q' * 10000, MSG_DONTWAIT))
    # the sender's own buffer size also limits what it sends ([6.12.y] min(peer, own))
    l, a, b = c.pair(3, before=lambda s: sso(s, LVL, SO_VM_BUF, u64(3000)))
    c.check('own_bufsize_3000', lambda: a.send(b'q' * 10000, MSG_DONTWAIT))
    c.check('own_bufsize_3000.peer_sends', lambda: b.send(b'q' * 10000, MSG_DONTWAIT))
    # children inherit the listener's buffer size
    l = c.listener(4)
    sso(l, LVL, SO_VM_BUF, u64(5000))
    a = c.sock()
    a.connect((CID_LOCAL, c.p(4)))
    b = c.acc(l)
    c.check('child_bufsize_5000', lambda: a.send(b'q' * 10000, MSG_DONTWAIT))


@sc('send.large')
def _(c):
    # Large blocking sends: the bytes arrive as they were when send() returned, whether the
    # reader keeps up or comes late, and the sender may reuse its buffer at once (rvsock lends
    # the sender's pages to a local reader for such sends; see rust/zerocopy.rs).
    chunk = 65536

    def fill(buf, i):
        buf[:] = bytes([0x41 + i]) * chunk

    def expect(n):
        return b''.join(bytes([0x41 + i]) * chunk for i in range(n))

    def run(k, n, reader_delay):
        l, a, b = c.pair(k)
        set_timeo(b, 10.0, None)
        got = [None]
        bg(reader_delay, lambda: got.__setitem__(0, recv_all(b, n * chunk, timeout=10)))
        buf = bytearray(chunk)
        sent = []
        for i in range(n):
            fill(buf, i)
            sent.append(R(lambda: a.send(buf)))
            buf[:] = b'Z' * chunk  # scribble over it as soon as send() returned
        for _ in range(100):
            if got[0] is not None:
                break
            time.sleep(0.1)
        data = got[0] or b''
        return 'sent=%s got=%d intact=%s' % (','.join(sorted(set(sent))), len(data),
                                             'yes' if data == expect(n) else 'no')
    c.check('reader_waiting', lambda: run(0, 16, 0.0))
    c.check('reader_late', lambda: run(1, 3, 0.5))
    c.check('reader_late_then_waiting', lambda: run(2, 12, 0.3))

    # a fault in the middle of a large send: what was taken before it is sent, and intact
    l, a, b = c.pair(3)
    good = ctypes.create_string_buffer(b'\x61' * chunk, chunk)
    iovs = (iovec * 2)()
    iovs[0].iov_base = ctypes.cast(good, c_void_p)
    iovs[0].iov_len = chunk
    iovs[1].iov_base = 4096  # unmapped
    iovs[1].iov_len = chunk
    m = msghdr()
    m.msg_iov = iovs
    m.msg_iovlen = 2
    c.check('fault_second_iov', lambda: _sys(c_sendmsg, fd_of(a), ctypes.byref(m), 0))
    c.check('fault_second_iov.peer_got', lambda: (lambda d: 'len=%d intact=%s' % (
        len(d), 'yes' if d == b'\x61' * len(d) else 'no'))(recv_all(b, chunk, timeout=2)))
    c.check('fault_first_iov', lambda: _sys(c_sendmsg, fd_of(a), ctypes.byref(msghdr(
        msg_iov=(iovec * 1)(iovec(4096, chunk)), msg_iovlen=1)), 0))
    c.check('after_fault', lambda: a.send(b'\x62' * chunk))
    c.check('after_fault.peer_got', lambda: len(recv_all(b, chunk, timeout=2)))


@sc('send.eintr')
def _(c):
    l, a, b = c.pair(0)
    a.send(b'\x01' * 262144, MSG_DONTWAIT)
    settle()
    set_timeo(a, None, 0)

    def go(restart=False, timeo=0):
        set_timeo(a, None, timeo)
        with Alarm(0.15, restart) as al:
            r = R(lambda: _sys(c_send, a.fileno(), b'abc', 3, 0))
        return '%s handler=%d' % (r, al.count)
    c.check('no_timeout', lambda: go())
    c.check('sndtimeo', lambda: go(timeo=2.0))


@sc('recv.eintr')
def _(c):
    l, a, b = c.pair(0)

    def go(restart=False, timeo=0, feed=None):
        set_timeo(a, timeo, None)
        if feed is not None:
            bg(feed, lambda: b.send(b'late'))
        buf = ctypes.create_string_buffer(16)
        with Alarm(0.15, restart) as al:
            r = R(lambda: _sys(c_recv, a.fileno(), buf, 16, 0))
        return '%s handler=%d' % (r, al.count)
    c.check('no_timeout', lambda: go())
    c.check('rcvtimeo', lambda: go(timeo=2.0))
    c.check('rcvtimeo.sa_restart', lambda: go(restart=True, timeo=2.0))
    c.check('sa_restart_restarts', lambda: go(restart=True, timeo=0, feed=0.6))


# ==== 9. SIGPIPE ==============================================================================

@sc('sigpipe')
def _(c):
    l, a, b = c.pair(0)
    b.close()
    wait_ev(a, POLLRDHUP)
    settle()
    c.check('stream.send', lambda: with_sigpipe(lambda: _sys(c_send, a.fileno(), b'x', 1, 0)))
    c.check('stream.send_nosignal',
            lambda: with_sigpipe(lambda: _sys(c_send, a.fileno(), b'x', 1, MSG_NOSIGNAL)))
    c.check('stream.sendmsg', lambda: with_sigpipe(lambda: sendmsg_raw(a, [b'x'])))
    c.check('stream.write', lambda: with_sigpipe(lambda: _sys(c_write, a.fileno(), b'x', 1)))

    # delivery to a handler (not blocked)
    def handler():
        n = [0]
        old = signal.signal(signal.SIGPIPE, lambda s, f: n.__setitem__(0, n[0] + 1))
        try:
            r = R(lambda: _sys(c_send, a.fileno(), b'x', 1, 0))
            for _ in range(1000):
                pass
            time.sleep(0.01)
        finally:
            signal.signal(signal.SIGPIPE, old)
        return '%s handler=%d' % (r, n[0])
    c.check('stream.handler', handler)
    l, a, b = c.pair(1, SEQ)
    b.close()
    wait_ev(a, POLLRDHUP)
    settle()
    c.check('seqpacket.send', lambda: with_sigpipe(lambda: _sys(c_send, a.fileno(), b'x', 1, 0)))
    c.check('seqpacket.write',
            lambda: with_sigpipe(lambda: _sys(c_write, a.fileno(), b'x', 1)))
    s = c.sock()
    c.check('unconnected.send', lambda: with_sigpipe(lambda: _sys(c_send, s.fileno(), b'x', 1, 0)))


# ==== 10. poll() in each state =================================================================

@sc('poll.stream')
def _(c):
    c.check('fresh', lambda: pmask(c.sock()))
    b = c.sock()
    b.bind((CID_ANY, c.p(0)))
    c.check('bound', lambda: pmask(b))
    l = c.listener(1)
    c.check('listen.empty', lambda: pmask(l))
    x = c.sock()
    x.connect((CID_LOCAL, c.p(1)))
    c.check('listen.pending', lambda: wait_mask(l, POLLIN))
    y = c.acc(l)
    c.check('listen.after_accept', lambda: pmask(l))
    settle()
    c.check('connected.idle', lambda: pmask(x))
    c.check('accepted.idle', lambda: pmask(y))
    y.send(b'data')
    c.check('connected.data', lambda: wait_mask(x, POLLIN))
    c.check('connected.data.peer', lambda: pmask(y))

    l, a, b = c.pair(2)
    a.shutdown(socket.SHUT_WR)
    settle()
    c.check('local_shut_wr', lambda: pmask(a))
    c.check('local_shut_wr.peer', lambda: wait_mask(b, POLLRDHUP))
    b.shutdown(socket.SHUT_WR)
    settle()
    c.check('both_shut_wr', lambda: wait_mask(a, POLLRDHUP))
    c.check('both_shut_wr.peer', lambda: pmask(b))

    l, a, b = c.pair(3)
    a.shutdown(socket.SHUT_RD)
    settle()
    c.check('local_shut_rd', lambda: pmask(a))
    c.check('local_shut_rd.peer', lambda: pmask(b))

    l, a, b = c.pair(4)
    a.shutdown(socket.SHUT_RDWR)
    settle()
    c.check('local_shut_rdwr', lambda: pmask(a))
    c.check('local_shut_rdwr.peer', lambda: pmask(b))

    l, a, b = c.pair(5)
    b.close()
    c.check('peer_close', lambda: wait_mask(a, POLLRDHUP))
    l, a, b = c.pair(6)
    b.send(b'pending')
    b.close()
    c.check('peer_close_with_data', lambda: wait_mask(a, POLLRDHUP))

    s = c.sock()
    R(lambda: s.connect((CID_LOCAL, c.p(7))))
    c.check('after_refused', lambda: pmask(s))
    s = c.sock(nonblock=True)
    s.connect_ex((CID_LOCAL, c.p(8)))
    c.check('after_refused_nonblock', lambda: wait_mask(s, POLLERR))

    # a listener closed with a pending (never accepted) connection
    l = c.listener(9)
    x = c.sock()
    x.connect((CID_LOCAL, c.p(9)))
    l.close()
    c.check('listener_closed_pending', lambda: wait_mask(x, POLLRDHUP))
    c.check('listener_closed_pending.recv', lambda: x.recv(10))


@sc('poll.seqpacket')
def _(c):
    c.check('fresh', lambda: pmask(c.sock(SEQ)))
    l = c.listener(0, SEQ)
    c.check('listen.empty', lambda: pmask(l))
    x = c.sock(SEQ)
    x.connect((CID_LOCAL, c.p(0)))
    c.check('listen.pending', lambda: wait_mask(l, POLLIN))
    y = c.acc(l)
    settle()
    c.check('connected.idle', lambda: pmask(x))
    y.send(b'msg')
    c.check('connected.data', lambda: wait_mask(x, POLLIN))
    y.close()
    c.check('peer_close_with_data', lambda: wait_mask(x, POLLRDHUP))
    l, a, b = c.pair(1, SEQ)
    a.shutdown(socket.SHUT_RDWR)
    settle()
    c.check('local_shut_rdwr', lambda: pmask(a))
    c.check('local_shut_rdwr.peer', lambda: pmask(b))


@sc('poll.epoll')
def _(c):
    l, a, b = c.pair(0)
    ep = select.epoll()
    try:
        ep.register(a.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP |
                    select.EPOLLET)
        c.emit('et.initial', ' '.join(pstr(ev) for _fd, ev in ep.poll(0.5)) or 'nothing')
        c.emit('et.again', ' '.join(pstr(ev) for _fd, ev in ep.poll(0)) or 'nothing')
        b.send(b'x')
        settle()
        c.emit('et.data', ' '.join(pstr(ev) for _fd, ev in ep.poll(0.5)) or 'nothing')
        b.close()
        settle()
        c.emit('et.peer_close', ' '.join(pstr(ev) for _fd, ev in ep.poll(0.5)) or 'nothing')
    finally:
        ep.close()


# ==== 11. SEQPACKET ===========================================================================

@sc('seqpacket')
def _(c):
    l, a, b = c.pair(0, SEQ)
    for m in (b'aaa', b'bbbb', b'cc'):
        b.send(m)
    settle()
    c.check('boundaries', lambda: ','.join(str(len(a.recv(100))) for _ in range(3)))
    c.check('empty', lambda: a.recv(100, MSG_DONTWAIT))

    sendmsg_raw(b, [b'with-eor'], MSG_EOR)
    sendmsg_raw(b, [b'no-eor'], 0)
    settle()
    c.check('eor.set', lambda: recvmsg_raw(a, 100), fmt_recvmsg)
    c.check('eor.unset', lambda: recvmsg_raw(a, 100), fmt_recvmsg)

    b.send(b'0123456789')
    b.send(b'next')
    settle()
    c.check('trunc.flag', lambda: recvmsg_raw(a, 4, MSG_TRUNC), fmt_recvmsg)
    c.check('trunc.next', lambda: recvmsg_raw(a, 100), fmt_recvmsg)
    b.send(b'0123456789')
    b.send(b'after')
    settle()
    c.check('trunc.noflag', lambda: recvmsg_raw(a, 4), fmt_recvmsg)
    c.check('trunc.noflag.next', lambda: recvmsg_raw(a, 100), fmt_recvmsg)
    b.send(b'exact')
    settle()
    c.check('trunc.exact', lambda: recvmsg_raw(a, 5), fmt_recvmsg)

    b.send(b'peekaboo!!')
    settle()
    c.check('peek.full', lambda: recvmsg_raw(a, 100, MSG_PEEK), fmt_recvmsg)
    c.check('peek.small', lambda: recvmsg_raw(a, 4, MSG_PEEK), fmt_recvmsg)
    c.check('peek.trunc', lambda: recvmsg_raw(a, 4, MSG_PEEK | MSG_TRUNC), fmt_recvmsg)
    c.check('peek.len0', lambda: recvmsg_raw(a, 0, MSG_PEEK), fmt_recvmsg)
    c.check('len0', lambda: recvmsg_raw(a, 0), fmt_recvmsg)
    c.check('after_peek', lambda: recvmsg_raw(a, 100), fmt_recvmsg)
    sendmsg_raw(b, [b'eor-peek'], MSG_EOR)
    settle()
    c.check('peek.eor', lambda: recvmsg_raw(a, 100, MSG_PEEK), fmt_recvmsg)
    c.check('peek.eor.recv', lambda: recvmsg_raw(a, 100), fmt_recvmsg)

    c.check('zero_len.send', lambda: b.send(b''))
    settle()
    c.check('zero_len.recv', lambda: a.recv(100, MSG_DONTWAIT))
    c.check('zero_len.sendmsg_eor', lambda: sendmsg_raw(b, [b''], MSG_EOR))
    settle()
    c.check('zero_len.sendmsg_eor.recv', lambda: a.recv(100, MSG_DONTWAIT))

    c.check('iov.send', lambda: sendmsg_raw(b, [b'ab', b'', b'cde'], MSG_EOR))
    settle()

    def rv():
        b1, b2 = bytearray(2), bytearray(10)
        n = os.readv(a.fileno(), [b1, b2])
        return 'ret=%d %r %r' % (n, bytes(b1), bytes(b2[:max(n - 2, 0)]))
    c.check('iov.readv', rv)
    b.send(b'waitall')
    settle()
    c.check('waitall', lambda: a.recv(100, MSG_WAITALL))
    b.send(b'read()')
    settle()
    c.check('read_syscall', lambda: os.read(a.fileno(), 3))
    c.check('read_syscall.next', lambda: a.recv(100, MSG_DONTWAIT))


@sc('seqpacket.size')
def _(c):
    l, a, b = c.pair(0, SEQ)
    c.check('bufsize_plus1', lambda: a.send(b'\0' * 262145))
    c.check('bufsize', lambda: a.send(b'\x01' * 262144))
    c.check('bufsize.recv', lambda: 'len=%d' % len(b.recv(300000)))
    c.check('large_eor.send', lambda: sendmsg_raw(a, [b'\x02' * 100000], MSG_EOR))
    settle()

    def big():
        r, data, fl, _n, _c = recvmsg_raw(b, 200000)
        return 'ret=%d flags=%s intact=%s' % (r, mflags(fl), data == b'\x02' * 100000)
    c.check('large_eor.recv', big)
    a.send(b'\x03' * 70000)
    settle()
    c.check('large.trunc', lambda: recvmsg_raw(b, 10, MSG_TRUNC), fmt_recvmsg)
    c.check('large.after', lambda: b.recv(10, MSG_DONTWAIT))

    # own buffer size limits the message size
    l, a, b = c.pair(1, SEQ)
    sso(a, LVL, SO_VM_BUF, u64(1000))
    c.check('own_buf.1001', lambda: a.send(b'\0' * 1001))
    c.check('own_buf.1000', lambda: a.send(b'\0' * 1000))
    # the peer's buffer size (advertised by a credit update) too
    l, a, b = c.pair(2, SEQ)
    sso(b, LVL, SO_VM_BUF, u64(2000))
    settle()
    c.check('peer_buf.2001', lambda: a.send(b'\0' * 2001))
    c.check('peer_buf.2000', lambda: a.send(b'\0' * 2000))
    c.check('peer_buf.full', lambda: a.send(b'\0' * 10, MSG_DONTWAIT))
    settle()
    c.check('peer_buf.full.poll', lambda: pmask(a))


# ==== 12. socket options ======================================================================

def _tvs(raw):
    if len(raw) < 16:
        return 'short:%s' % raw.hex()
    s, u = struct.unpack('<qq', raw[:16])
    return '%d.%06d' % (s, u)


@sc('opt.get')
def _(c):
    s = c.sock()
    for o in (SO_VM_BUF, SO_VM_BUF_MIN, SO_VM_BUF_MAX):
        c.check('default.opt%d' % o, lambda o=o: get_u64(s, o))
    for o in (SO_VM_CT_OLD, SO_VM_CT_NEW):
        c.check('default.opt%d' % o, lambda o=o: (lambda r: 'len=%d %s' % (r[0], _tvs(r[1])))(
            gso_raw(s, LVL, o, 16)))
    c.check('default.seqpacket.opt0', lambda: get_u64(c.sock(SEQ), SO_VM_BUF))
    for ln in (0, 4, 7, 8, 9, 16, -1):
        c.check('optlen%d.opt0' % ln, lambda ln=ln: 'len=%d' % gso_raw(s, LVL, SO_VM_BUF, ln)[0])
    for ln in (8, 15, 16, 32):
        c.check('optlen%d.opt6' % ln, lambda ln=ln: 'len=%d' % gso_raw(s, LVL, SO_VM_CT_OLD, ln)[0])
        c.check('optlen%d.opt8' % ln, lambda ln=ln: 'len=%d' % gso_raw(s, LVL, SO_VM_CT_NEW, ln)[0])
    for o in (3, 4, 5, 7, 9, 100, -1):
        c.check('unknown.opt%d' % o, lambda o=o: gso_raw(s, LVL, o, 8))
    for lv in (0, 6, 287, 41, 0x7FFF):
        c.check('level%d' % lv, lambda lv=lv: gso_raw(s, lv, 0, 8))
    c.check('null_optlen.opt0', lambda: _sys(c_getsockopt, s.fileno(), LVL, 0,
                                            ctypes.create_string_buffer(8), None))
    c.check('null_optlen.opt3', lambda: _sys(c_getsockopt, s.fileno(), LVL, 3,
                                            ctypes.create_string_buffer(8), None))
    c.check('null_optval.opt0', lambda: _sys(c_getsockopt, s.fileno(), LVL, 0, None,
                                            ctypes.byref(c_int(8))))
    c.check('null_optval.optlen0', lambda: _sys(c_getsockopt, s.fileno(), LVL, 0, None,
                                               ctypes.byref(c_int(0))))


@sc('opt.set')
def _(c):
    s = c.sock()
    for ln in (0, 4, 7, 8, 16):
        c.check('optlen%d.opt0' % ln, lambda ln=ln: R(
            lambda: sso(s, LVL, SO_VM_BUF, u64(5000) + b'\0' * 8, ln)) +
            ' get=%d' % get_u64(s, SO_VM_BUF))
    for ln in (8, 15, 16, 24):
        c.check('optlen%d.opt6' % ln, lambda ln=ln: sso(s, LVL, SO_VM_CT_OLD, tv(1, 0) + b'\0' * 8,
                                                      ln))
        c.check('optlen%d.opt8' % ln, lambda ln=ln: sso(s, LVL, SO_VM_CT_NEW, tv(1, 0) + b'\0' * 8,
                                                      ln))
    for o in (3, 4, 5, 7, 9, 100, -1):
        c.check('unknown.opt%d' % o, lambda o=o: sso(s, LVL, o, u64(1)))
        c.check('unknown.opt%d.null' % o, lambda o=o: _sys(c_setsockopt, s.fileno(), LVL, o,
                                                          None, 8))
    for lv in (0, 6, 287, 41, 0x7FFF):
        c.check('level%d' % lv, lambda lv=lv: sso(s, lv, 0, u64(1)))
    c.check('null.opt0', lambda: _sys(c_setsockopt, s.fileno(), LVL, 0, None, 8))
    c.check('null.opt0.optlen4', lambda: _sys(c_setsockopt, s.fileno(), LVL, 0, None, 4))
    c.check('null.opt6', lambda: _sys(c_setsockopt, s.fileno(), LVL, 6, None, 16))
    c.check('null.zerocopy', lambda: _sys(c_setsockopt, s.fileno(), SOL_SOCKET, SO_ZEROCOPY,
                                         None, 4))
    c.check('null.rcvlowat', lambda: _sys(c_setsockopt, s.fileno(), SOL_SOCKET, SO_RCVLOWAT,
                                         None, 4))


@sc('opt.clamp')
def _(c):
    def seq(steps, connected=False, k=0):
        if connected:
            _l, s, _b = c.pair(k)
        else:
            s = c.sock()
        out = []
        for o, v in steps:
            r = R(lambda: sso(s, LVL, o, u64(v)))
            if r != 'ok':
                out.append(r)
        return '%s size=%d min=%d max=%d' % (' '.join(out) or 'ok', get_u64(s, SO_VM_BUF),
                                            get_u64(s, SO_VM_BUF_MIN), get_u64(s, SO_VM_BUF_MAX))
    B, MN, MX = SO_VM_BUF, SO_VM_BUF_MIN, SO_VM_BUF_MAX
    c.check('size1000', lambda: seq([(B, 1000)]))
    c.check('size10', lambda: seq([(B, 10)]))
    c.check('size1M', lambda: seq([(B, 1 << 20)]))
    c.check('size_u64max', lambda: seq([(B, (1 << 64) - 1)]))
    c.check('min1000_size500', lambda: seq([(MN, 1000), (B, 500)]))
    c.check('max2000', lambda: seq([(MX, 2000)]))
    c.check('max100', lambda: seq([(MX, 100)]))
    c.check('max100_size50', lambda: seq([(MX, 100), (B, 50)]))
    c.check('min300000', lambda: seq([(MN, 300000)]))
    c.check('max1M_size1M', lambda: seq([(MX, 1 << 20), (B, 1 << 20)]))
    c.check('max2^40_size2^40', lambda: seq([(MX, 1 << 40), (B, 1 << 40)]))
    c.check('min0_size0', lambda: seq([(MN, 0), (B, 0)]))
    c.check('min_gt_max', lambda: seq([(MN, 5000), (MX, 4000), (B, 4500)]))
    c.check('connected.size1000', lambda: seq([(B, 1000)], True, 1))
    c.check('connected.max2^40_size2^40', lambda: seq([(MX, 1 << 40), (B, 1 << 40)], True, 2))
    c.check('connected.size0', lambda: seq([(MN, 0), (B, 0)], True, 3))

    def big_then_connect():
        l = c.listener(4)
        s = c.sock()
        sso(s, LVL, MX, u64(1 << 40))
        sso(s, LVL, B, u64(1 << 40))
        s.connect((CID_LOCAL, c.p(4)))
        c.acc(l)
        return 'size=%d' % get_u64(s, B)
    c.check('size2^40_then_connect', big_then_connect)

    def big_listener():
        l = c.listener(5)
        sso(l, LVL, MX, u64(1 << 40))
        sso(l, LVL, B, u64(1 << 40))
        x = c.sock()
        x.connect((CID_LOCAL, c.p(5)))
        y = c.acc(l)
        return 'listener=%d child=%d' % (get_u64(l, B), get_u64(y, B))
    c.check('size2^40_listener_child', big_listener)


@sc('opt.connect_timeout')
def _(c):
    s = c.sock()
    cases = [('0.0', 0, 0), ('1.1', 1, 1), ('0.999999', 0, 999999), ('3.250000', 3, 250000),
             ('neg_sec', -1, 0), ('usec_1e6', 0, 1000000), ('usec_neg', 0, -1),
             ('usec_-4001', 0, -4001), ('neg_sec_neg_usec', -1, -1),
             ('sec_2^40', 1 << 40, 0), ('sec_2^62', 1 << 62, 0), ('5.0', 5, 0)]
    for name, sec, usec in cases:
        for o in (SO_VM_CT_OLD, SO_VM_CT_NEW):
            f = c.sock()  # fresh, starting from the default 2 s
            c.check('opt%d.%s' % (o, name), lambda f=f, o=o, sec=sec, usec=usec: R(
                lambda: sso(f, LVL, o, tv(sec, usec))) + ' get=' +
                _tvs(gso_raw(f, LVL, o, 16)[1]))
            f.close()
    c.check('old_read_by_new', lambda: (sso(s, LVL, SO_VM_CT_OLD, tv(7, 0)),
                                        _tvs(gso_raw(s, LVL, SO_VM_CT_NEW, 16)[1]))[1])

    def inherit():
        l = c.listener(0)
        sso(l, LVL, SO_VM_CT_OLD, tv(9, 500000))
        sso(l, LVL, SO_VM_BUF_MAX, u64(100000))
        sso(l, LVL, SO_VM_BUF_MIN, u64(200))
        sso(l, LVL, SO_VM_BUF, u64(5000))
        ssi(l, SOL_SOCKET, SO_RCVLOWAT, 100)
        ssi(l, SOL_SOCKET, SO_ZEROCOPY, 1)
        set_timeo(l, 2.5, 2.5)
        ssi(l, SOL_SOCKET, SO_SNDBUF, 65536)
        sso(l, SOL_SOCKET, SO_LINGER, struct.pack('ii', 1, 7))
        x = c.sock()
        x.connect((CID_LOCAL, c.p(0)))
        y = c.acc(l, timeo=0)
        return ('ct=%s size=%d min=%d max=%d rcvlowat=%d zerocopy=%d rcvtimeo=%s sndbuf=%d '
                'linger=%r') % (
            _tvs(gso_raw(y, LVL, SO_VM_CT_OLD, 16)[1]), get_u64(y, SO_VM_BUF),
            get_u64(y, SO_VM_BUF_MIN), get_u64(y, SO_VM_BUF_MAX),
            gso_int(y, SOL_SOCKET, SO_RCVLOWAT), gso_int(y, SOL_SOCKET, SO_ZEROCOPY),
            _tvs(gso_raw(y, SOL_SOCKET, SO_RCVTIMEO, 16)[1]), gso_int(y, SOL_SOCKET, SO_SNDBUF),
            struct.unpack('ii', gso_raw(y, SOL_SOCKET, SO_LINGER, 8)[1][:8]))
    c.check('inherited_by_child', inherit)


@sc('opt.zerocopy')
def _(c):
    s = c.sock()
    c.check('default', lambda: gso_int(s, SOL_SOCKET, SO_ZEROCOPY))
    for i, v in enumerate((1, 0, 2, -1, 1)):
        c.check('step%d.set%d' % (i, v), lambda v=v: R(lambda: sso(s, SOL_SOCKET, SO_ZEROCOPY,
                                                       struct.pack('i', v))) +
                ' get=%d' % gso_int(s, SOL_SOCKET, SO_ZEROCOPY))
    s2 = c.sock()
    c.check('optlen2', lambda: sso(s2, SOL_SOCKET, SO_ZEROCOPY, b'\x01\x00'))
    c.check('optlen8', lambda: R(lambda: sso(s2, SOL_SOCKET, SO_ZEROCOPY, struct.pack('q', 1))) +
            ' get=%d' % gso_int(s2, SOL_SOCKET, SO_ZEROCOPY))
    l, a, b = c.pair(0)
    c.check('connected', lambda: sso(a, SOL_SOCKET, SO_ZEROCOPY, struct.pack('i', 1)))
    c.check('accepted', lambda: sso(b, SOL_SOCKET, SO_ZEROCOPY, struct.pack('i', 1)))
    c.check('listener', lambda: sso(l, SOL_SOCKET, SO_ZEROCOPY, struct.pack('i', 1)))
    c.check('seqpacket', lambda: sso(c.sock(SEQ), SOL_SOCKET, SO_ZEROCOPY, struct.pack('i', 1)))

    def before_connect():
        l2 = c.listener(1)
        x = c.sock()
        sso(x, SOL_SOCKET, SO_ZEROCOPY, struct.pack('i', 1))
        x.connect((CID_LOCAL, c.p(1)))
        c.acc(l2)
        return 'get=%d' % gso_int(x, SOL_SOCKET, SO_ZEROCOPY)
    c.check('before_connect', before_connect)


@sc('opt.sol_socket')
def _(c):
    s = c.sock()
    q = c.sock(SEQ)
    for nm, o in (('type', SO_TYPE), ('protocol', SO_PROTOCOL), ('domain', SO_DOMAIN),
                  ('error', SO_ERROR), ('acceptconn', SO_ACCEPTCONN),
                  ('rcvlowat', SO_RCVLOWAT), ('keepalive', SO_KEEPALIVE)):
        c.check('stream.' + nm, lambda o=o: gso_int(s, SOL_SOCKET, o))
        c.check('seqpacket.' + nm, lambda o=o: gso_int(q, SOL_SOCKET, o))
    c.check('sndbuf.set', lambda: R(lambda: ssi(s, SOL_SOCKET, SO_SNDBUF, 65536)) +
            ' get=%d' % gso_int(s, SOL_SOCKET, SO_SNDBUF))
    c.check('rcvbuf.set', lambda: R(lambda: ssi(s, SOL_SOCKET, SO_RCVBUF, 65536)) +
            ' get=%d' % gso_int(s, SOL_SOCKET, SO_RCVBUF))
    c.check('keepalive.set', lambda: R(lambda: ssi(s, SOL_SOCKET, SO_KEEPALIVE, 1)) +
            ' get=%d' % gso_int(s, SOL_SOCKET, SO_KEEPALIVE))
    c.check('linger.set', lambda: R(lambda: sso(s, SOL_SOCKET, SO_LINGER,
                                                         struct.pack('ii', 1, 5))) +
            ' get=%r' % (struct.unpack('ii', gso_raw(s, SOL_SOCKET, SO_LINGER, 8)[1][:8]),))
    c.check('rcvtimeo.set', lambda: R(lambda: set_timeo(s, 1.5, None)) + ' get=' +
            _tvs(gso_raw(s, SOL_SOCKET, SO_RCVTIMEO, 16)[1]))
    c.check('rcvtimeo.bad_usec', lambda: sso(s, SOL_SOCKET, SO_RCVTIMEO,
                                                      struct.pack('ll', 0, 2000000)))
    # Python's socket.setsockopt()/getsockopt() use a u64 (optlen 8) on AF_VSOCK sockets
    p = c.sock()
    c.check('python_api.rcvlowat', lambda: R(lambda: p.setsockopt(SOL_SOCKET, SO_RCVLOWAT, 7)) +
            ' get=%d' % p.getsockopt(SOL_SOCKET, SO_RCVLOWAT))
    c.check('python_api.bufsize', lambda: R(lambda: p.setsockopt(LVL, SO_VM_BUF, 5000)) +
            ' get=%d' % p.getsockopt(LVL, SO_VM_BUF))
    c.check('python_api.zerocopy', lambda: R(lambda: p.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)) +
            ' get=%d' % p.getsockopt(SOL_SOCKET, SO_ZEROCOPY))
    c.check('unknown', lambda: ssi(s, SOL_SOCKET, 9999, 1))
    c.check('get_unknown', lambda: gso_int(s, SOL_SOCKET, 9999))


# ==== 13. ioctl ===============================================================================

@sc('ioctl')
def _(c):
    s = c.sock()
    c.check('siocoutq.fresh', lambda: ioctl_int(s, SIOCOUTQ))
    b = c.sock()
    b.bind((CID_ANY, c.p(0)))
    c.check('siocoutq.bound', lambda: ioctl_int(b, SIOCOUTQ))
    l = c.listener(1)
    c.check('siocoutq.listener', lambda: ioctl_int(l, SIOCOUTQ))
    lp, a, sv = c.pair(2)
    c.check('siocoutq.connected', lambda: ioctl_int(a, SIOCOUTQ))
    c.check('siocoutq.accepted', lambda: ioctl_int(sv, SIOCOUTQ))
    a.send(b'x' * 1000)
    settle()
    c.check('siocoutq.after_send', lambda: ioctl_int(a, SIOCOUTQ))
    c.check('siocoutq.null', lambda: _sys(c_ioctl, a.fileno(), SIOCOUTQ, None))
    e = c.sock()
    R(lambda: e.connect((3, c.p(3))))
    c.check('siocoutq.after_enodev', lambda: ioctl_int(e, SIOCOUTQ))
    q = c.sock(SEQ)
    c.check('siocoutq.seqpacket.fresh', lambda: ioctl_int(q, SIOCOUTQ))
    # SIOCINQ/FIONREAD: not implemented by the 6.12 C stack (ENOTTY)
    c.check('siocinq.fresh', lambda: ioctl_int(s, SIOCINQ))
    c.check('siocinq.listener', lambda: ioctl_int(l, SIOCINQ))
    c.check('siocinq.connected_with_data', lambda: ioctl_int(sv, SIOCINQ))
    c.check('siocgstamp', lambda: ioctl_int(a, SIOCGSTAMP))
    c.check('unknown', lambda: ioctl_int(a, 0x12345678))
    c.check('unknown_sock_type', lambda: ioctl_int(a, 0x89F0))


# ==== 14. MSG_ZEROCOPY ========================================================================

def errqueue(s):
    r, data, fl, _nl, ctrl = recvmsg_raw(s, 16, MSG_ERRQUEUE, 256)
    out = ['ret=%d flags=%s' % (r, mflags(fl))]
    off = 0
    while off + 16 <= len(ctrl):
        ln, lvl, typ = struct.unpack_from('<Qii', ctrl, off)
        out.append('cmsg level=%d type=%d len=%d' % (lvl, typ, ln))
        if ln >= 32:
            ee_errno, origin, eetype, code, _pad, info, dat = struct.unpack_from('<IBBBBII', ctrl,
                                                                                off + 16)
            out.append('errno=%d origin=%d type=%d code=%d info=%d data=%d' % (
                ee_errno, origin, eetype, code, info, dat))
        off += (ln + 7) & ~7
        if ln == 0:
            break
    return ' '.join(out)


@sc('zerocopy')
def _(c):
    c.check('errqueue.fresh', lambda: errqueue(c.sock()))
    zc = lambda s: sso(s, SOL_SOCKET, SO_ZEROCOPY, struct.pack('i', 1))  # noqa: E731
    l, a, b = c.pair(0, before=zc)
    c.check('send', lambda: _sys(c_send, a.fileno(), b'z' * 4096, 4096, MSG_ZEROCOPY))
    settle()
    c.check('before_peer_reads', lambda: errqueue(a))
    c.check('peer_recv', lambda: 'len=%d' % len(recv_all(b, 4096)))
    settle()
    c.check('poll', lambda: pmask(a))
    c.check('completion', lambda: errqueue(a))
    c.check('completion.again', lambda: errqueue(a))
    c.check('poll.after', lambda: pmask(a))

    # two sends, both consumed: one merged notification for ids 0..1 (after the first batch: 1..2)
    a.send(b'y' * 100, MSG_ZEROCOPY)
    a.send(b'y' * 100, MSG_ZEROCOPY)
    recv_all(b, 200)
    settle()
    c.check('two.completion', lambda: errqueue(a))
    c.check('two.again', lambda: errqueue(a))

    # a multi-packet send: one notification
    a.send(b'w' * 150000, MSG_ZEROCOPY)
    recv_all(b, 150000)
    settle()
    c.check('large.completion', lambda: errqueue(a))

    # MSG_ZEROCOPY without SO_ZEROCOPY is ignored
    l2, x, y = c.pair(1)
    c.check('no_option.send', lambda: x.send(b'q' * 4096, MSG_ZEROCOPY))
    recv_all(y, 4096)
    settle()
    c.check('no_option.errqueue', lambda: errqueue(x))
    c.check('unconnected.send', lambda: c.sock().send(b'q', MSG_ZEROCOPY))

    # seqpacket
    l3, p, q = c.pair(2, SEQ, before=zc)
    c.check('seqpacket.send', lambda: p.send(b'm' * 5000, MSG_ZEROCOPY))
    c.check('seqpacket.peer_recv', lambda: 'len=%d' % len(q.recv(10000)))
    settle()
    c.check('seqpacket.completion', lambda: errqueue(p))
    # option set after connect
    l4, m, n = c.pair(3)
    zc(m)
    c.check('after_connect.send', lambda: m.send(b'k' * 1000, MSG_ZEROCOPY))
    recv_all(n, 1000)
    settle()
    c.check('after_connect.completion', lambda: errqueue(m))


# ==== 15. bad user pointers ===================================================================

@sc('badptr')
def _(c):
    l, a, b = c.pair(0)
    b.send(b'hello')
    settle()
    c.check('stream.recv_null', lambda: _sys(c_recv, a.fileno(), None, 5, 0))
    c.check('stream.recv_null.data_kept', lambda: a.recv(100))
    c.check('stream.recv_null_len0', lambda: _sys(c_recv, a.fileno(), None, 0, 0))
    b.send(b'peek')
    settle()
    c.check('stream.peek_null', lambda: _sys(c_recv, a.fileno(), None, 4, MSG_PEEK))
    c.check('stream.peek_null.data_kept', lambda: a.recv(100))
    c.check('stream.send_null', lambda: _sys(c_send, a.fileno(), None, 10, 0))
    c.check('stream.send_null_len0', lambda: _sys(c_send, a.fileno(), None, 0, 0))
    settle()
    c.check('stream.send_null.peer_got', lambda: b.recv(100, MSG_DONTWAIT))
    c.check('stream.send_null.siocoutq', lambda: ioctl_int(a, SIOCOUTQ))
    c.check('stream.send_after', lambda: a.send(b'fine'))
    c.check('stream.send_after.peer', lambda: recv_all(b, 4))
    c.check('stream.recvmsg_null_iov', lambda: recvmsg_raw(a, 10, MSG_DONTWAIT, nullbuf=True))

    l, p, q = c.pair(1, SEQ)
    q.send(b'first')
    q.send(b'second')
    settle()
    c.check('seqpacket.recv_null', lambda: _sys(c_recv, p.fileno(), None, 5, 0))
    c.check('seqpacket.recv_null.next', lambda: p.recv(100, MSG_DONTWAIT))
    c.check('seqpacket.recv_null.empty', lambda: p.recv(100, MSG_DONTWAIT))
    q.send(b'peeked')
    settle()
    c.check('seqpacket.peek_null', lambda: _sys(c_recv, p.fileno(), None, 6, MSG_PEEK))
    c.check('seqpacket.peek_null.kept', lambda: p.recv(100, MSG_DONTWAIT))
    c.check('seqpacket.send_null', lambda: _sys(c_send, p.fileno(), None, 10, 0))
    settle()
    c.check('seqpacket.send_null.peer', lambda: q.recv(100, MSG_DONTWAIT))
    c.check('seqpacket.send_after', lambda: p.send(b'ok'))
    c.check('seqpacket.send_after.peer', lambda: q.recv(100))

    c.check('getsockopt.null_optlen', lambda: _sys(c_getsockopt, a.fileno(), SOL_SOCKET, SO_TYPE,
                                                  ctypes.create_string_buffer(4), None))
    c.check('ioctl.siocoutq_null', lambda: _sys(c_ioctl, a.fileno(), SIOCOUTQ, None))
    c.check('ioctl.siocoutq_bad', lambda: _sys(c_ioctl, a.fileno(), SIOCOUTQ, 8))
    c.check('getpeername.null_addr', lambda: _sys(c_getpeername, a.fileno(), None,
                                                 ctypes.byref(c_uint(16))))


# ==== 16. closing ==============================================================================

@sc('close')
def _(c):
    # a bound, unconnected socket frees its port at once
    s = c.sock()
    s.bind((CID_ANY, c.p(0)))
    s.close()
    c.check('bound.rebind', lambda: bind_close(c, c.p(0)))

    # the listener's port is free right after closing it, while accepted sockets live on
    l, a, b = c.pair(1)
    l.close()
    c.check('listener.rebind', lambda: bind_close(c, c.p(1)))

    def still_works():
        a.send(b'ping')
        x = recv_all(b, 4)
        b.send(b'pong')
        return x + recv_all(a, 4)
    c.check('listener.children_still_work', still_works)

    def new_listener():
        l2 = c.listener(2)
        l2.close()
        l3 = c.sock()
        l3.bind((CID_ANY, c.p(1)))
        l3.listen(1)
        x = c.sock()
        x.connect((CID_LOCAL, c.p(1)))
        y = c.acc(l3)
        x.send(b'new')
        return recv_all(y, 3)
    c.check('listener.new_listener_same_port', new_listener)

    # an explicit client port can be bound again once the peer has answered the close
    l, a, b = c.pair(3, client_port=4)
    a.close()
    c.check('client.rebind_eventually', lambda: try_bind_until(c, c.p(4)))
    c.last.close()
    c.check('client.peer_sees', lambda: wait_mask(b, POLLRDHUP))
    c.check('client.peer_recv', lambda: b.recv(10))
    c.check('client.peer_send', lambda: with_sigpipe(lambda: b.send(b'x', MSG_NOSIGNAL)))

    # if the peer closed first, the port is free as soon as close() returns
    l, a, b = c.pair(5, client_port=6)
    b.close()
    wait_ev(a, POLLRDHUP)
    settle()
    a.close()
    c.check('client_after_peer_close.rebind_at_once', lambda: bind_close(c, c.p(6)))

    # unread data at the peer: no RST, the port stays taken until the peer closes too
    l, a, b = c.pair(7, client_port=8)
    a.send(b'unread')
    settle()
    a.close()
    settle()
    time.sleep(0.5)
    c.check('peer_unread.rebind_after_0.5s', lambda: bind_close(c, c.p(8)))
    c.check('peer_unread.peer_poll', lambda: pmask(b))
    c.check('peer_unread.peer_recv', lambda: b.recv(100))
    c.check('peer_unread.peer_recv_eof', lambda: b.recv(100))
    b.close()
    c.check('peer_unread.rebind_after_peer_close', lambda: try_bind_until(c, c.p(8)))

    # a reconnect from the same explicit port to the same listener
    l = c.listener(9)
    a = c.sock()
    a.bind((CID_ANY, c.p(10)))
    a.connect((CID_LOCAL, c.p(9)))
    b = c.acc(l)
    a.close()
    r = try_bind_until(c, c.p(10))

    def reconnect():
        x = c.last
        x.connect((CID_LOCAL, c.p(9)))
        y = c.acc(l)
        x.send(b'again')
        return recv_all(y, 5)
    c.check('reconnect_same_port', lambda: r + ' ' + R(reconnect))

    # closing the listener releases its pending connections: the client sees EOF
    l = c.listener(11)
    x = c.sock()
    x.bind((CID_ANY, c.p(12)))
    x.connect((CID_LOCAL, c.p(11)))
    l.close()
    c.check('pending.client_poll', lambda: wait_mask(x, POLLRDHUP))
    c.check('pending.client_recv', lambda: x.recv(10))
    c.check('pending.client_send', lambda: with_sigpipe(lambda: x.send(b'x', MSG_NOSIGNAL)))
    c.check('pending.listener_port', lambda: bind_close(c, c.p(11)))

    # SO_LINGER: close() waits for the peer's answer, which comes at once here
    l, a, b = c.pair(13)
    sso(a, SOL_SOCKET, SO_LINGER, struct.pack('ii', 1, 2))

    def linger():
        t0 = time.monotonic()
        a.close()
        return 'ok fast=%s' % ('yes' if time.monotonic() - t0 < 1.5 else 'no')
    c.check('linger', linger)
    c.check('linger.peer', lambda: wait_mask(b, POLLRDHUP))

    # seqpacket, same rules
    l, a, b = c.pair(14, SEQ, client_port=15)
    a.close()
    c.check('seqpacket.client.rebind_eventually', lambda: try_bind_until(c, c.p(15), typ=SEQ))
    l.close()
    c.check('seqpacket.listener.rebind', lambda: bind_close(c, c.p(14), typ=SEQ))


@sc('close.timeout')
def _(c):
    # the closing side waits up to 8 s for the peer's answer, then resets; its port stays
    # taken meanwhile.  Here the peer has unread data, so it does not answer.
    l, a, b = c.pair(0, client_port=1)
    a.send(b'unread')
    settle()
    t0 = time.monotonic()
    a.close()
    time.sleep(max(0.0, 6.0 - (time.monotonic() - t0)))
    c.check('at_6s.rebind', lambda: bind_close(c, c.p(1)))
    c.check('at_6s.peer_poll', lambda: pmask(b))
    time.sleep(max(0.0, 10.0 - (time.monotonic() - t0)))
    c.check('at_10s.rebind', lambda: bind_close(c, c.p(1)))
    c.check('at_10s.peer_poll', lambda: pmask(b))
    c.check('at_10s.peer_recv', lambda: b.recv(100))
    c.check('at_10s.peer_recv_eof', lambda: b.recv(100))
    c.check('at_10s.peer_send', lambda: with_sigpipe(lambda: b.send(b'x')))
    c.check('at_10s.peer_so_error', lambda: gso_int(b, SOL_SOCKET, SO_ERROR))

    # SO_LINGER waits for the answer that does not come, for the linger time
    l, a, b = c.pair(2)
    sso(a, SOL_SOCKET, SO_LINGER, struct.pack('ii', 1, 1))
    a.send(b'unread')
    settle()

    def linger():
        t0 = time.monotonic()
        a.close()
        dt = time.monotonic() - t0
        return 'ok waited=%s' % ('yes' if dt >= 0.8 else 'no')
    c.check('linger_1s_peer_unread', linger)


# ==== 17. miscellaneous real-program behaviour ===================================================

@sc('misc')
def _(c):
    l, a, b = c.pair(0)

    def sendfile():
        path = '/tmp/rvsock-conformance-%d' % os.getpid()
        with open(path, 'wb') as f:
            f.write(b'file-content-' * 10)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                n = os.sendfile(a.fileno(), fd, 0, 130)
            finally:
                os.close(fd)
        finally:
            os.unlink(path)
        return 'ret=%d got=%r' % (n, recv_all(b, 130)[:26])
    c.check('sendfile', sendfile)

    def splice():
        r, w = os.pipe()
        try:
            a.send(b'spliced!')
            settle()
            n = os.splice(b.fileno(), w, 100)
            return 'ret=%d %r' % (n, os.read(r, 100))
        finally:
            os.close(r)
            os.close(w)
    c.check('splice_to_pipe', splice)

    def splice_from():
        r, w = os.pipe()
        try:
            os.write(w, b'from-pipe')
            n = os.splice(r, a.fileno(), 9)
            return 'ret=%d %r' % (n, recv_all(b, 9))
        finally:
            os.close(r)
            os.close(w)
    c.check('splice_from_pipe', splice_from)

    def sigio():
        n = [0]
        old = signal.signal(signal.SIGIO, lambda s, f: n.__setitem__(0, n[0] + 1))
        try:
            fcntl.fcntl(b.fileno(), fcntl.F_SETOWN, os.getpid())
            fl = fcntl.fcntl(b.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(b.fileno(), fcntl.F_SETFL, fl | os.O_ASYNC)
            a.send(b'wake')
            settle()
            for _ in range(1000):
                pass
            time.sleep(0.05)
            got = n[0]
            fcntl.fcntl(b.fileno(), fcntl.F_SETFL, fl)
            recv_all(b, 4)
        finally:
            signal.signal(signal.SIGIO, old)
        return 'sigio=%s' % ('yes' if got else 'no')
    c.check('o_async_sigio', sigio)

    def sel():
        a.send(b's')
        settle()
        r, w, x = select.select([b], [b], [b], 0)
        recv_all(b, 1)
        return 'r=%d w=%d x=%d' % (len(r), len(w), len(x))
    c.check('select', sel)

    def dup_close():
        d = os.dup(a.fileno())
        os.close(d)
        a.send(b'dup')
        return recv_all(b, 3)
    c.check('dup_close_keeps_socket', dup_close)

    def fork_child_close():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        a.send(b'fork')
        return recv_all(b, 4)
    c.check('fork_child_exit_keeps_socket', fork_child_close)


@sc('wakeup')
def _(c):
    # blocked calls woken by another thread or by the peer
    l, a, b = c.pair(0)
    bg(0.2, lambda: a.shutdown(socket.SHUT_RD))
    c.check('recv_by_local_shut_rd', lambda: a.recv(10))
    l, a, b = c.pair(1)
    bg(0.2, lambda: b.close())
    c.check('recv_by_peer_close', lambda: a.recv(10))
    l, a, b = c.pair(2)
    bg(0.2, lambda: b.send(b'late'))
    c.check('recv_by_data', lambda: a.recv(10))
    l, a, b = c.pair(3)
    bg(0.2, lambda: b.shutdown(socket.SHUT_WR))
    c.check('recv_by_peer_shut_wr', lambda: a.recv(10))
    l, a, b = c.pair(4)
    a.send(b'\x00' * 262144, MSG_DONTWAIT)
    bg(0.2, lambda: a.shutdown(socket.SHUT_WR))
    c.check('send_by_local_shut_wr', lambda: with_sigpipe(lambda: a.send(b'more')))
    l, a, b = c.pair(5)
    a.send(b'\x00' * 262144, MSG_DONTWAIT)
    bg(0.2, lambda: b.close())
    c.check('send_by_peer_close', lambda: with_sigpipe(lambda: a.send(b'more', MSG_NOSIGNAL)))
    l, a, b = c.pair(6)
    a.send(b'\x00' * 262144, MSG_DONTWAIT)
    bg(0.2, lambda: recv_all(b, 262144))
    c.check('send_by_peer_read', lambda: a.send(b'more'))
    # shutdown() of a listener is refused and does not wake accept()
    l = c.listener(7)
    set_timeo(l, 1.0, None)
    r = []
    bg(0.2, lambda: r.append(R(lambda: l.shutdown(socket.SHUT_RDWR))))

    def acc():
        t0 = time.monotonic()
        x = R(lambda: acc_r(c, l))
        return '%s waited_full=%s shutdown=%s' % (x, 'yes' if time.monotonic() - t0 > 0.8 else
                                                  'no', r[0] if r else '?')
    c.check('accept_not_by_shutdown', acc)
    l = c.listener(8)
    bg(0.2, lambda: c.sock().connect((CID_LOCAL, c.p(8))))
    c.check('accept_by_connect', lambda: acc_r(c, l))
    l, a, b = c.pair(9)

    def pollwait():
        bg(0.2, lambda: b.send(b'x'))
        p = select.poll()
        p.register(a.fileno(), select.POLLIN)
        ev = p.poll(3000)
        return pstr(ev[0][1]) if ev else 'timeout'
    c.check('poll_by_data', pollwait)


@sc('pattern')
def _(c):
    # request / half-close / response
    l = c.listener(0)
    cl = c.sock()
    cl.connect((CID_LOCAL, c.p(0)))
    sv = c.acc(l)
    cl.send(b'GET /')
    cl.shutdown(socket.SHUT_WR)

    def server():
        req = drain(sv)
        sv.send(b'200 OK for ' + req)
        sv.close()
        return req
    c.check('half_close.server_got', server)
    c.check('half_close.client_got', lambda: drain(cl))

    # data sent before accept() is there when the socket is accepted
    l = c.listener(1)
    x = c.sock()
    x.connect((CID_LOCAL, c.p(1)))
    x.send(b'early bird')
    settle()
    c.check('data_before_accept', lambda: recv_all(c.acc(l), 10))

    # 1 MiB each way, checked byte for byte
    l, a, b = c.pair(2)
    blob = bytes((i * 7 + 3) & 0xFF for i in range(1 << 20))
    got = [None]
    bg(0, lambda: got.__setitem__(0, recv_all(b, len(blob), timeout=10)))

    def big():
        n = 0
        while n < len(blob):
            n += a.send(blob[n:n + 100000])
        for _ in range(200):
            if got[0] is not None:
                break
            time.sleep(0.05)
        return 'sent=%d received=%d intact=%s' % (n, len(got[0] or b''), got[0] == blob)
    c.check('stream_1MiB', big)

    # many messages keep their order and boundaries
    l, a, b = c.pair(3, SEQ)

    def many():
        for i in range(200):
            a.send(b'm%03d' % i + b'.' * (i % 17))
        out = [b.recv(100) for _ in range(200)]
        ok = all(out[i] == b'm%03d' % i + b'.' * (i % 17) for i in range(200))
        return 'messages=%d in_order=%s' % (len(out), ok)
    c.check('seqpacket_200_messages', many)

    # many connections to one listener
    l = c.listener(4, backlog=64)

    def conns():
        cs = []
        for _ in range(40):
            x = c.sock()
            x.connect((CID_LOCAL, c.p(4)))
            cs.append(x)
        acc = [c.acc(l) for _ in range(40)]
        for i, x in enumerate(cs):
            x.send(b'%02d' % i)
        got = sorted(recv_all(y, 2) for y in acc)
        return 'connected=%d accepted=%d distinct=%d' % (len(cs), len(acc), len(set(got)))
    c.check('40_connections', conns)

    # flags that vsock ignores
    l, a, b = c.pair(5)
    for nm, fl in (('more', 0x8000), ('dontroute', 0x4), ('confirm', 0x800), ('eor', MSG_EOR),
                   ('nosignal', MSG_NOSIGNAL)):
        c.check('send_flag.' + nm, lambda fl=fl: R(lambda: a.send(b'f', fl)) + ' ' +
                R(lambda: recv_all(b, 1)))
    a.send(b'cmsg')
    settle()
    c.check('recv_flag.cmsg_cloexec', lambda: b.recv(10, 0x40000000))

    # SO_PEERCRED and buffer defaults (generic socket code)
    def peercred():
        ln, raw = gso_raw(a, SOL_SOCKET, 17, 12)
        pid, uid, gid = struct.unpack('iII', raw[:12])
        return 'len=%d pid=%s uid=%d gid=%d' % (ln, 'self' if pid == os.getpid() else pid, uid,
                                               gid)
    c.check('so_peercred', peercred)
    c.check('so_sndbuf.default', lambda: gso_int(c.sock(), SOL_SOCKET, SO_SNDBUF))
    c.check('so_rcvbuf.default', lambda: gso_int(c.sock(), SOL_SOCKET, SO_RCVBUF))

    # port 0 is a valid port
    l = c.sock()

    def port0():
        l.bind((CID_ANY, 0))
        l.listen(1)
        x = c.sock()
        x.connect((CID_LOCAL, 0))
        y = c.acc(l)
        return 'ok ' + c.name_of(y) + ' ' + c.name_of(x, peer=True)
    c.check('port0_listener', port0)
    l.close()


def diag_dump(c, ports, names, states=0xFFFFFFFF):
    """A SOCK_DIAG_BY_FAMILY dump for AF_VSOCK: one line per socket on `ports`, sorted, with
    the socket named by `names` (inode -> name) where it is one of ours."""
    ns = socket.socket(16, socket.SOCK_RAW | SOCK_CLOEXEC, 4)  # NETLINK_SOCK_DIAG
    c.track(ns)
    ns.settimeout(3)
    req = struct.pack('<BBHIII2I', AF_VSOCK, 0, 0, states, 0, 0, 0, 0)
    hdr = struct.pack('<IHHII', 16 + len(req), 20, 0x301, 1, 0)  # SOCK_DIAG_BY_FAMILY, DUMP
    ns.send(hdr + req)
    rows = []
    while True:
        data = ns.recv(65536)
        off = 0
        while off + 16 <= len(data):
            ln, typ, _fl, _seq, _pid = struct.unpack_from('<IHHII', data, off)
            if typ == 3:  # NLMSG_DONE
                return rows
            if typ == 2:  # NLMSG_ERROR
                err = struct.unpack_from('<i', data, off + 16)[0]
                return ['errno=' + ename(-err)]
            fam, st, state, shut, sc_, sp, dc, dp, ino = struct.unpack_from(
                '<BBBBIIIII', data, off + 16)
            if sp in ports or dp in ports:
                rows.append('%s:type=%d state=%d shutdown=%d src=%s:%s dst=%s:%s' % (
                    names.get(ino, 'other'), st, state, shut, fcid(sc_), c.fport(sp),
                    fcid(dc), c.fport(dp)))
            off += (ln + 3) & ~3
            if ln == 0:
                break


@sc('diag')
def _(c):
    l, a, b = c.pair(0, client_port=1)
    b.shutdown(socket.SHUT_WR)
    settle()
    ports = {c.p(0), c.p(1)}
    inos = {os.fstat(s.fileno()).st_ino: n for s, n in ((l, 'listener'), (a, 'client'),
                                                         (b, 'accepted'))}
    c.check('dump', lambda: ' ; '.join(sorted(diag_dump(c, ports, inos))) or 'empty')
    c.check('dump.listening_only', lambda: ' ; '.join(sorted(
        diag_dump(c, ports, inos, states=1 << 10))) or 'empty')  # TCP_LISTEN
    # sockets not bound yet are listed too; binding moves them, closing removes them
    u = c.sock()
    v = c.sock(SEQ)
    un = {os.fstat(u.fileno()).st_ino: 'unbound', os.fstat(v.fileno()).st_ino: 'unbound_seq'}

    def mine(names, port):
        return ' ; '.join(sorted(r for r in diag_dump(c, {0xFFFFFFFF, port}, names)
                                 if not r.startswith('other:'))) or 'empty'
    c.check('dump.unbound', lambda: mine(un, c.p(3)))
    u.bind((CID_ANY, c.p(3)))
    c.check('dump.unbound_then_bound', lambda: mine(un, c.p(3)))
    v.close()
    c.check('dump.unbound_closed', lambda: mine(un, c.p(3)))
    # more sockets than one netlink buffer holds: the dump resumes where it stopped
    l2 = c.listener(2, backlog=400)
    socks = [l2]
    for _ in range(300):
        s = c.sock(timeo=None)
        s.connect((CID_LOCAL, c.p(2)))
        socks += [s, c.acc(l2, timeo=None)]
    names = {os.fstat(s.fileno()).st_ino: 's%d' % i for i, s in enumerate(socks)}

    def many():
        rows = diag_dump(c, {c.p(2)}, names)
        return 'rows=%d distinct=%d unnamed=%d' % (len(rows), len(set(rows)),
                                                  sum(r.startswith('other:') for r in rows))
    c.check('dump.many', many)


# ==== 18. connecting state, held with a stalled loopback worker ==================================
#
# The C loopback delivers packets from a per-CPU kworker.  A SCHED_FIFO probe pinned to one CPU
# keeps that worker from running until the probe sleeps, so the SYN_SENT state (and unsent
# bytes) can be observed deterministically.  A stack that delivers synchronously shows the
# connected state instead; such results are timing, not errno, differences.

class Stall:
    def __enter__(self):
        self.aff = os.sched_getaffinity(0)
        cpu = min(self.aff)
        os.sched_setaffinity(0, {cpu})
        settle()
        time.sleep(0.05)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return self

    def __exit__(self, *a):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, self.aff)
        return False


@sc('stall')
def _(c):
    l = c.listener(0)
    s = c.sock(nonblock=True)
    res = []
    with Stall():
        res.append(('connecting.connect', R(lambda: cex(s, (CID_LOCAL, c.p(0))))))
        res.append(('connecting.poll', R(lambda: pmask(s))))
        res.append(('connecting.listener_poll', R(lambda: pmask(l))))
        res.append(('connecting.connect_again', R(lambda: cex(s, (CID_LOCAL, c.p(0))))))
        res.append(('connecting.getpeername', R(lambda: c.name_of(s, peer=True))))
        res.append(('connecting.getsockname', R(lambda: c.name_of(s))))
        res.append(('connecting.send', R(lambda: s.send(b'x'))))
        res.append(('connecting.recv', R(lambda: s.recv(10))))
        res.append(('connecting.siocoutq', R(lambda: ioctl_int(s, SIOCOUTQ))))
        res.append(('connecting.listen', R(lambda: s.listen(1))))
        res.append(('connecting.bind', R(lambda: s.bind((CID_ANY, c.p(1))))))
        res.append(('connecting.so_error', R(lambda: gso_int(s, SOL_SOCKET, SO_ERROR))))
        res.append(('connecting.zerocopy', R(lambda: sso(s, SOL_SOCKET, SO_ZEROCOPY,
                                                          struct.pack('i', 1)))))
    for k, v in res:
        c.emit(k, v)
    c.check('connected.poll', lambda: wait_mask(s, POLLOUT))
    c.check('connected.connect_again', lambda: cex(s, (CID_LOCAL, c.p(0))))
    c.check('connected.accept', lambda: c.acc(l) and None)

    # a blocking connect() issued while the non-blocking one is in flight waits for it
    l2 = c.listener(2)
    s2 = c.sock(nonblock=True)
    res = []
    with Stall():
        res.append(('blocking_after_nonblock.first', R(lambda: cex(s2, (CID_LOCAL, c.p(2))))))
        s2.setblocking(True)
        res.append(('blocking_after_nonblock.second', R(lambda: s2.connect((CID_LOCAL, c.p(2))))))
    for k, v in res:
        c.emit(k, v)
    c.acc(l2)

    # unsent bytes are visible with SIOCOUTQ until the worker runs
    l3, a, b = c.pair(3)
    res = []
    with Stall():
        res.append(('unsent.send', R(lambda: a.send(b'u' * 100))))
        res.append(('unsent.siocoutq', R(lambda: ioctl_int(a, SIOCOUTQ))))
        res.append(('unsent.peer_poll', R(lambda: pmask(b))))
    for k, v in res:
        c.emit(k, v)
    settle()
    c.check('unsent.siocoutq_after', lambda: ioctl_int(a, SIOCOUTQ))

    # the explicit port of a just-closed client is busy until the peer answers
    l4, a, b = c.pair(4, client_port=5)
    res = []
    with Stall():
        a.close()
        res.append(('close.rebind_at_once', bind_close(c, c.p(5))))
    for k, v in res:
        c.emit(k, v)
    c.check('close.rebind_eventually', lambda: try_bind_until(c, c.p(5)))

    # shutdown() while connecting: the RESPONSE still makes the socket SS_CONNECTED
    l6 = c.listener(6)
    s6 = c.sock(nonblock=True)
    res = []
    with Stall():
        res.append(('shutdown_connecting.connect', R(lambda: cex(s6, (CID_LOCAL, c.p(6))))))
        res.append(('shutdown_connecting.shutdown', R(lambda: s6.shutdown(socket.SHUT_RDWR))))
        res.append(('shutdown_connecting.getpeername', R(lambda: c.name_of(s6, peer=True))))
    for k, v in res:
        c.emit(k, v)
    settle()
    time.sleep(0.05)
    settle()
    c.check('shutdown_connecting.after.getpeername', lambda: c.name_of(s6, peer=True))
    c.check('shutdown_connecting.after.poll', lambda: pmask(s6))
    c.check('shutdown_connecting.after.recv', lambda: s6.recv(10))


# ==== 19. a socket's owner stalled in a page fault (userfaultfd) ================================
#
# A thread's send() (or recv()) on a socket faults on a userfaultfd page inside the copy from
# (or to) user memory and sleeps there holding the socket's lock, until the probe resolves the
# fault.  Meanwhile the peer keeps sending: everything it was entitled to send must arrive, in
# order; a large sender must not be held, and must die at once when killed.

SYS_userfaultfd = 323
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F       # _IOWR(0xAA, 0x3F, struct uffdio_api)
UFFDIO_REGISTER = 0xC020AA00  # _IOWR(0xAA, 0x00, struct uffdio_register)
UFFDIO_COPY = 0xC028AA03      # _IOWR(0xAA, 0x03, struct uffdio_copy)
UFFD_EVENT_PAGEFAULT = 0x12
PAGE = 4096

c_syscall = _fn('syscall', c_long, c_long, c_long)


class Uffd:
    """An anonymous mapping of `pages` pages whose first touch waits for resolve()."""

    def __init__(self, pages):
        self.len = pages * PAGE
        self.fd = _sys(c_syscall, SYS_userfaultfd, 0o2000000 | SOCK_NONBLOCK)  # O_CLOEXEC
        api = (ctypes.c_uint64 * 3)(UFFD_API, 0, 0)
        _sys(c_ioctl, self.fd, UFFDIO_API, ctypes.byref(api))
        self.addr = c_mmap(None, self.len, 3, 0x22, -1, 0)  # RW, MAP_PRIVATE|MAP_ANONYMOUS
        if self.addr is None or self.addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), 'mmap')
        reg = (ctypes.c_uint64 * 4)(self.addr, self.len, 1, 0)  # UFFDIO_REGISTER_MODE_MISSING
        _sys(c_ioctl, self.fd, UFFDIO_REGISTER, ctypes.byref(reg))

    def wait_fault(self, timeout=DEFAULT_TIMEO):
        """Waits until a task faults on the mapping; True when one did."""
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        if not p.poll(int(timeout * 1000)):
            return False
        msg = os.read(self.fd, 32)
        return len(msg) == 32 and msg[0] == UFFD_EVENT_PAGEFAULT

    def resolve(self, data):
        """Fills the whole mapping with `data` (repeated), waking the faulting task."""
        src = ctypes.create_string_buffer((data * (self.len // len(data) + 1))[:self.len])
        cp = (ctypes.c_uint64 * 5)(self.addr, ctypes.addressof(src), self.len, 0, 0)
        _sys(c_ioctl, self.fd, UFFDIO_COPY, ctypes.byref(cp))
        self.resolved = True

    def close(self):
        # Never leave a task stalled (it would hold its socket's lock for good): resolve first.
        if not getattr(self, 'resolved', False):
            try:
                self.resolve(b'\0')
            except OSError:
                pass
        os.close(self.fd)
        c_munmap(self.addr, self.len)


def pattern(n):
    return bytes(i % 251 for i in range(n))


def stalled_send(c, s, u, nbytes):
    """Starts a thread whose send() on `s` faults on `u`'s mapping; returns (thread, results)
    once the fault happened (the thread then owns `s`, stalled)."""
    res = []
    t = threading.Thread(target=lambda: res.append(c_send(fd_of(s), u.addr, nbytes, 0)),
                         daemon=True)
    t.start()
    if not u.wait_fault():
        raise RuntimeError('no fault')
    return t, res


def one_byte_packets(c, n):
    """The reproducer of issue 9, item 1: the receiver's owner is stalled in its own send()
    while the peer sends `n` one-byte packets within its credit."""
    l, a, b = c.pair(0)
    u = c.track(Uffd(1))
    t, res = stalled_send(c, b, u, PAGE)
    sent = 0
    try:
        for i in range(n):
            sent += a.send(bytes([i % 251]))
    finally:
        u.resolve(b'S')
    t.join(DEFAULT_TIMEO)
    # The C loopback delivers the queued packets from its worker, about a thousand a second
    # in the test VM.
    got = recv_all(b, n, timeout=10 + n / 300)
    c.emit('one_byte_packets',
           'ok' if got == pattern(n) and sent == n else
           'sent=%d got=%d same=%s' % (sent, len(got), got == pattern(n)[:len(got)]))
    c.emit('stalled_send', 'ret=%s' % (res[0] if res else None))
    c.check('peer_got', lambda: 'ok' if recv_all(a, PAGE, timeout=10) == b'S' * PAGE else 'short')


@sc('owner_stall.n2000')
def _(c):
    one_byte_packets(c, 2000)


@sc('owner_stall.n20000', limit=150.0)
def _(c):
    one_byte_packets(c, 20000)


@sc('owner_stall.large_send')
def _(c):
    # A large blocking send to a stalled receiver returns at once (the C stack copies; rvsock's
    # lent pages get their own copy when they reach an owned socket).
    l, a, b = c.pair(0)
    u = c.track(Uffd(1))
    t, res = stalled_send(c, b, u, PAGE)
    big = pattern(65536)
    try:
        c.check('returns', lambda: waited(lambda: a.send(big), 1.0))
    finally:
        u.resolve(b'S')
    t.join(DEFAULT_TIMEO)
    c.check('data', lambda: 'ok' if recv_all(b, len(big), timeout=10) == big else 'bad')


@sc('owner_stall.sigkill')
def _(c):
    # SIGKILL of a 64 KiB sender whose receiver is stalled in recv() copying into a faulting
    # page: the sender is gone within a second; the reader then gets the data.
    l, a, b = c.pair(0)
    u = c.track(Uffd(16))
    big = pattern(65536)
    got = []
    rt = threading.Thread(target=lambda: got.append(c_recv(fd_of(b), u.addr, 65536, MSG_WAITALL)),
                          daemon=True)
    rt.start()
    time.sleep(0.1)
    pid = os.fork()
    if pid == 0:
        try:
            a.send(big)
        finally:
            os._exit(0)
    try:
        faulted = u.wait_fault()
        time.sleep(0.2)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        reaped = False
        while time.monotonic() - t0 < 5:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped = True
                break
            time.sleep(0.01)
        dt = time.monotonic() - t0
        c.emit('reaped_within_1s', 'yes' if reaped and dt < 1.0 else
               'no (faulted=%s reaped=%s after %.2fs)' % (faulted, reaped, dt))
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    finally:
        u.resolve(b'\0')
    rt.join(DEFAULT_TIMEO)
    data = ctypes.string_at(u.addr, 65536) if got and got[0] == 65536 else b''
    c.emit('reader', 'ret=%s data=%s' % (got[0] if got else None, 'ok' if data == big else 'bad'))


@sc('seqpacket.backpressure')
def _(c):
    # A reader leaves one-byte messages unread while a non-blocking sender keeps sending.  The
    # 6.12 C stack resets the connection (ENOBUFS) after about 456 and loses what was queued;
    # rvsock makes the sender wait (EAGAIN) and loses nothing.
    l, a, b = c.pair(0, SEQ)
    sent, err = 0, None
    for i in range(5000):
        try:
            a.send(bytes([i % 251]), MSG_DONTWAIT)
            sent += 1
        except OSError as e:
            err = ename(e.errno)
            break
    msgs = []
    while True:
        try:
            m = b.recv(10, MSG_DONTWAIT)
        except OSError as e:
            msgs.append(ename(e.errno))
            break
        if not m:
            break
        msgs.append(m)
    data = [m for m in msgs if isinstance(m, bytes)]
    tail = [m for m in msgs if not isinstance(m, bytes)]
    lost = sent - len(data)
    c.emit('one_byte_messages',
           'sender=%s receiver_end=%s all_delivered=%s in_order=%s' % (
               err or 'no error', tail[0] if tail else 'eof',
               'yes' if lost == 0 else 'no',
               'yes' if all(m == bytes([i % 251]) for i, m in enumerate(data)) else 'no'))


# ==== main ====================================================================================

class WatchdogThread(threading.Thread):
    """Interrupts the main thread (SIGUSR1 -> Watchdog) if a scenario runs too long."""

    def __init__(self, limit, tid):
        super().__init__(daemon=True)
        self.limit, self.tid, self.ev = limit, tid, threading.Event()

    def run(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGS)
        if not self.ev.wait(self.limit):
            signal.pthread_kill(self.tid, signal.SIGUSR1)

    def cancel(self):
        self.ev.set()


def setup_sync():
    global SYNC
    base = PORT_BASE - 2
    l = socket.socket(AF_VSOCK, STREAM)
    set_timeo(l, 5, 5)
    l.bind((CID_ANY, base))
    l.listen(1)
    a = socket.socket(AF_VSOCK, STREAM)
    set_timeo(a, 5, 5)
    a.connect((CID_LOCAL, base))
    b, _ = l.accept()
    set_timeo(b, 5, 5)
    l.close()
    SYNC = (a, b)


def main(argv):
    global PORT_BASE
    only = []
    i = 1
    while i < len(argv):
        if argv[i] == '--port-base':
            PORT_BASE = int(argv[i + 1])
            i += 2
        elif argv[i] == '--list':
            for n, _f in SCENARIOS:
                print(n)
            return 0
        elif argv[i] in ('-h', '--help'):
            print(__doc__)
            print('usage: probe.py [--port-base N] [--list] [SCENARIO-PREFIX...]')
            return 0
        else:
            only.append(argv[i])
            i += 1
    # Python ignores SIGPIPE by default: keep it that way (checks look at it explicitly)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    main_tid = threading.get_ident()

    def on_usr1(signum, frame):
        raise Watchdog()
    signal.signal(signal.SIGUSR1, on_usr1)

    t_start = time.monotonic()
    try:
        setup_sync()
    except Exception as e:  # noqa: BLE001
        print('probe.sync_setup %s' % exc_str(e), flush=True)
    count = 0
    for idx, (name, fn) in enumerate(SCENARIOS):
        if only and not any(name == o or name.startswith(o + '.') or name.startswith(o)
                            for o in only):
            continue
        c = Ctx(idx, name)
        timer = WatchdogThread(LIMITS.get(name, SCENARIO_LIMIT), main_tid)
        t0 = time.monotonic()
        try:
            timer.start()
            try:
                fn(c)
            finally:
                timer.cancel()
        except Watchdog:
            c.emit('watchdog', 'exception=Watchdog:timeout')
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            c.emit('setup', exc_str(e))
        try:
            c.close_all()
        except Watchdog:
            pass
        for k, v in c.lines:
            print('%s %s' % (k, v))
        sys.stdout.flush()
        count += len(c.lines)
        print('# %-24s %3d checks %6.2fs' % (name, len(c.lines), time.monotonic() - t0),
              file=sys.stderr, flush=True)
    print('# total: %d checks in %d scenarios, %.1f s' % (count, len(SCENARIOS),
                                                         time.monotonic() - t_start),
          file=sys.stderr, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
