//! Process signals: Ctrl-C and SIGTERM ask for a graceful stop; SIGHUP asks for
//! the TLS certificates to be read again.

use std::future::Future;

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled, so no signal in between is missed.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUPs as they arrive (and no longer the end of the process); `None` where
/// there is no such signal or it cannot be watched.
pub struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    /// Starts watching SIGHUP.
    pub fn watch() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                signal: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Err(std::io::Error::other("no SIGHUP on this platform"))
    }

    /// The next SIGHUP; `None` once none can arrive any more.
    pub async fn recv(&mut self) -> Option<()> {
        #[cfg(unix)]
        {
            self.signal.recv().await
        }
        #[cfg(not(unix))]
        None
    }
}
