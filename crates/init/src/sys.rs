//! Every `unsafe` block of init lives here, each with a `// SAFETY:` note:
//! the IPv4 and IPv6 interface/route ioctls (rustix has no safe wrappers
//! for them), `kill(-1, sig)` (rustix's `Pid` cannot be -1), and the hook
//! run in the forked child before it execs node (new session, privileges
//! dropped).

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::net::{AddressFamily, SocketType};

const IFNAMSIZ: usize = 16;

/// `struct ifreq`: the interface name, then a 24-byte union of which we use
/// `ifr_addr`/`ifr_netmask` (a `sockaddr`) and `ifr_flags` (a `short`).
#[repr(C, align(8))]
struct IfReq {
    name: [u8; IFNAMSIZ],
    ifru: [u8; 24],
}

/// `struct rtentry` of `<linux/route.h>` (not in the libc crate for glibc).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// A `sockaddr_in` (port 0) as the generic `sockaddr` the ioctls take.
fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let mut data = [0 as libc::c_char; 14];
    for (d, b) in data[2..6].iter_mut().zip(addr.octets()) {
        *d = b as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: data,
    }
}

fn sockaddr_bytes(sa: &libc::sockaddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..2].copy_from_slice(&sa.sa_family.to_ne_bytes());
    for (o, d) in out[2..].iter_mut().zip(sa.sa_data) {
        *o = d as u8;
    }
    out
}

/// An AF_INET datagram socket to issue interface ioctls on.
pub struct NetSocket(OwnedFd);

impl NetSocket {
    pub fn new() -> io::Result<Self> {
        Ok(NetSocket(rustix::net::socket(
            AddressFamily::INET,
            SocketType::DGRAM,
            None,
        )?))
    }

    fn ifreq(iface: &str) -> io::Result<IfReq> {
        let bytes = iface.as_bytes();
        if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            ifru: [0; 24],
        };
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: the fd is an open socket we own; `arg` is an exclusively
        // borrowed, fully initialised `#[repr(C)]` struct of the layout the
        // kernel expects for `request` (only SIOC* requests from this module
        // are passed, each with its matching struct), and it outlives the call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, arg as *mut T) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sets the interface's primary IPv4 address (SIOCSIFADDR).
    pub fn set_addr(&self, iface: &str, addr: Ipv4Addr) -> io::Result<()> {
        let mut req = Self::ifreq(iface)?;
        req.ifru[..16].copy_from_slice(&sockaddr_bytes(&sockaddr_in(addr)));
        self.ioctl(libc::SIOCSIFADDR as _, &mut req)
    }

    /// Sets the interface's IPv4 netmask (SIOCSIFNETMASK).
    pub fn set_netmask(&self, iface: &str, mask: Ipv4Addr) -> io::Result<()> {
        let mut req = Self::ifreq(iface)?;
        req.ifru[..16].copy_from_slice(&sockaddr_bytes(&sockaddr_in(mask)));
        self.ioctl(libc::SIOCSIFNETMASK as _, &mut req)
    }

    /// Sets IFF_UP on the interface (SIOCGIFFLAGS then SIOCSIFFLAGS).
    pub fn set_up(&self, iface: &str) -> io::Result<()> {
        let mut req = Self::ifreq(iface)?;
        self.ioctl(libc::SIOCGIFFLAGS as _, &mut req)?;
        let flags = i16::from_ne_bytes([req.ifru[0], req.ifru[1]]) | libc::IFF_UP as i16;
        req.ifru[..2].copy_from_slice(&flags.to_ne_bytes());
        self.ioctl(libc::SIOCSIFFLAGS as _, &mut req)
    }

    /// Adds the default route via `gateway` on `iface` (SIOCADDRT); an
    /// existing identical route is fine.
    pub fn add_default_route(&self, iface: &str, gateway: Ipv4Addr) -> io::Result<()> {
        let dev = CString::new(iface).map_err(io::Error::other)?;
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr_in(gateway),
            rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: dev.as_ptr().cast_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        match self.ioctl(libc::SIOCADDRT as _, &mut rt) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }
}

/// `struct in6_ifreq` of `<linux/ipv6.h>`.
#[repr(C)]
struct In6IfReq {
    addr: [u8; 16],
    prefixlen: u32,
    ifindex: libc::c_int,
}

/// `struct in6_rtmsg` of `<linux/ipv6_route.h>` (the libc crate's has
/// private fields).
#[repr(C)]
struct In6RtMsg {
    dst: [u8; 16],
    src: [u8; 16],
    gateway: [u8; 16],
    rtype: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// An AF_INET6 datagram socket for the IPv6 address and route ioctls.
pub struct Net6Socket(NetSocket);

impl Net6Socket {
    pub fn new() -> io::Result<Self> {
        Ok(Net6Socket(NetSocket(rustix::net::socket(
            AddressFamily::INET6,
            SocketType::DGRAM,
            None,
        )?)))
    }

    fn index(iface: &str) -> io::Result<libc::c_int> {
        let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))?;
        text.trim().parse().map_err(io::Error::other)
    }

    /// Adds `addr/prefix` to the interface (SIOCSIFADDR on AF_INET6).
    pub fn add_addr(&self, iface: &str, addr: Ipv6Addr, prefix: u8) -> io::Result<()> {
        let mut req = In6IfReq {
            addr: addr.octets(),
            prefixlen: u32::from(prefix),
            ifindex: Self::index(iface)?,
        };
        match self.0.ioctl(libc::SIOCSIFADDR as _, &mut req) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Adds the IPv6 default route via `gateway` (SIOCADDRT on AF_INET6).
    pub fn add_default_route(&self, iface: &str, gateway: Ipv6Addr) -> io::Result<()> {
        let mut rt = In6RtMsg {
            dst: [0; 16],
            src: [0; 16],
            gateway: gateway.octets(),
            rtype: 0,
            dst_len: 0,
            src_len: 0,
            metric: 1,
            info: 0,
            flags: (libc::RTF_UP | libc::RTF_GATEWAY) as u32,
            ifindex: Self::index(iface)?,
        };
        match self.0.ioctl(libc::SIOCADDRT as _, &mut rt) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }
}

/// `kill(-1, sig)`: signals every process except PID 1 itself and kernel
/// threads. No process left (`ESRCH`) is not an error.
pub fn kill_all(sig: rustix::process::Signal) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(-1, sig.as_raw()) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Makes the spawned child the leader of a new session and process group,
/// so the app and everything it forks can be signalled as one group.
pub fn new_session(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec; it only makes
    // the raw setsid syscall (async-signal-safe: no allocation, no locks).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        })
    }
}

/// The user the app becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// Like [`new_session`], then, still in the child before exec: drops every
/// capability from the bounding set, clears the supplementary groups,
/// switches to `creds` (real, effective and saved ids; leaving uid 0
/// clears the permitted, effective and ambient capabilities), and sets
/// `no_new_privs` so no setuid file or file capability can give any back.
pub fn unprivileged_session(cmd: &mut Command, creds: Credentials) -> &mut Command {
    let uid = rustix::process::Uid::from_raw(creds.uid);
    let gid = rustix::process::Gid::from_raw(creds.gid);
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // raw system calls (setsid, prctl, setgroups, setresgid, setresuid) through
    // rustix's linux_raw backend and libc's thin `prctl` wrapper, and reads
    // errno: no allocation, no locks, async-signal-safe. The per-thread
    // set*id calls are right here: the forked child has exactly one thread.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    let err = io::Error::last_os_error();
                    if err.raw_os_error() == Some(libc::EINVAL) {
                        break; // past the kernel's last capability
                    }
                    return Err(err);
                }
            }
            rustix::thread::set_thread_groups(&[])?;
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
            rustix::thread::set_no_new_privs(true)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_in_layout() {
        let b = sockaddr_bytes(&sockaddr_in(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET as u16);
        assert_eq!(&b[2..8], &[0, 0, 10, 0, 2, 15]);
        assert!(b[8..].iter().all(|x| *x == 0));
    }

    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::size_of::<In6IfReq>(), 24);
        assert_eq!(std::mem::size_of::<In6RtMsg>(), 80);
    }

    /// The child runs as the given user with no capabilities at all and
    /// no_new_privs. Needs root to switch users (CI runs as root).
    #[test]
    fn unprivileged_session_drops_everything() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to change user");
            return;
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "id -u; id -g; id -G; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
        ]);
        unprivileged_session(
            &mut cmd,
            Credentials {
                uid: 1000,
                gid: 1000,
            },
        );
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..3], ["1000", "1000", "1000"], "{text}");
        for line in &lines[3..8] {
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
        assert_eq!(
            lines[8].split_whitespace().collect::<Vec<_>>(),
            ["NoNewPrivs:", "1"]
        );
    }

    #[test]
    fn bad_interface_names_are_rejected_before_any_ioctl() {
        assert!(NetSocket::ifreq("").is_err());
        assert!(NetSocket::ifreq("a-very-long-interface").is_err());
        assert!(NetSocket::ifreq("eth0").is_ok());
    }
}
