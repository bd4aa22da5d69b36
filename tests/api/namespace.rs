//! A network namespace of the test's own, whose loopback interface also carries
//! 192.0.2.1: a service run inside it sees a client that dials 192.0.2.1 as a peer
//! that is not loopback, as if it came from another machine. Making one needs root;
//! without it the tests that need one are skipped with a notice, or, in CI, fail.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::helpers::{Options, in_ci, within};

/// The address the namespace's loopback carries beside 127.0.0.1.
pub const OUTSIDE: &str = "192.0.2.1";

pub struct Namespace {
    name: String,
}

fn ip(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("ip").args(args).output()
}

impl Namespace {
    /// A new namespace, or `None` (after a visible notice) where this user cannot
    /// make one; in CI that fails the test instead.
    pub fn create(test: &str) -> Option<Self> {
        static NAMESPACES: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "rl{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::Relaxed)
        );
        let made = nix::unistd::geteuid().is_root()
            && ip(&["netns", "add", &name]).is_ok_and(|output| output.status.success());
        if !made {
            let why = "making a network namespace needs root and the ip command (iproute2)";
            assert!(!in_ci(), "{test} cannot run in CI: {why}");
            // Written to stderr directly: the test harness would capture `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "notice: {test} is SKIPPED: {why}; run the tests as root to enable it"
            );
            return None;
        }
        let namespace = Self { name };
        for args in [
            vec!["-n", &namespace.name, "link", "set", "lo", "up"],
            vec![
                "-n",
                &namespace.name,
                "addr",
                "add",
                "192.0.2.1/32",
                "dev",
                "lo",
            ],
        ] {
            let output = ip(&args).expect("ip");
            assert!(output.status.success(), "ip {args:?}: {output:?}");
        }
        Some(namespace)
    }

    /// `options` with the service run inside the namespace, its webhook listening
    /// on every address of it (gRPC and the console where `options` say).
    pub fn serve(&self, options: Options) -> Options {
        let mut options = options.args(["--http-addr", "0.0.0.0:0"]);
        options.wrapper = ["ip", "netns", "exec", &self.name]
            .map(str::to_owned)
            .to_vec();
        options
    }

    /// A gRPC channel to `addr`, dialled from inside the namespace.
    pub async fn channel(&self, addr: SocketAddr) -> Channel {
        let name = self.name.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let name = name.clone();
            async move { connect_in(name, addr).await.map(TokioIo::new) }
        });
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
        within(
            "a gRPC connection in the namespace",
            endpoint.connect_with_connector(connector),
        )
        .await
        .expect("connect in the namespace")
    }
}

impl Namespace {
    /// A TCP connection to `addr`, made from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> tokio::net::TcpStream {
        within(
            "a TCP connection in the namespace",
            connect_in(self.name.clone(), addr),
        )
        .await
        .expect("connect in the namespace")
    }
}

/// A TCP connection made from inside the namespace `name`.
async fn connect_in(name: String, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let path = format!("/var/run/netns/{name}");
    // A socket belongs to the namespace of the thread that made it; this thread
    // leaves with its task.
    let stream = std::thread::spawn(move || {
        let namespace = std::fs::File::open(path)?;
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(stream)
    })
    .join()
    .map_err(|_| std::io::Error::other("the connecting thread panicked"))??;
    tokio::net::TcpStream::from_std(stream)
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}
