//! The process's own figures, under the names Prometheus' process collector gives
//! them (so existing dashboards and alerts find them): CPU seconds, resident and
//! virtual memory, open file descriptors and their limit, the start time. Read
//! from `/proc` at each scrape; absent where there is no `/proc`.

use std::fmt::Write;

/// Linux reports CPU time in `/proc` in ticks of 1/100 s (USER_HZ), whatever the
/// kernel's own tick.
const TICKS_PER_SECOND: f64 = 100.0;

/// Appends the process's metrics, with HELP and TYPE, to `text`.
pub(super) fn render(text: &mut String) {
    let Some(figures) = Figures::read() else {
        return;
    };
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        figures.cpu_seconds,
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        figures.resident_bytes,
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        figures.virtual_bytes,
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        figures.open_fds,
    );
    if let Some(max) = figures.max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        figures.start_time_seconds,
    );
}

struct Figures {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: Option<f64>,
    start_time_seconds: f64,
}

impl Figures {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command's name, in parentheses, may hold spaces: count from its end.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        // Fields from the third (state) on: utime is the 14th, so index 11.
        let number = |index: usize| fields.get(index)?.parse::<f64>().ok();
        let cpu_seconds = (number(11)? + number(12)?) / TICKS_PER_SECOND;
        let start_ticks = number(19)?;
        let virtual_bytes = number(20)?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let resident_bytes = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb * 1024.0);
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|soft| soft.parse::<f64>().ok());
        Some(Self {
            cpu_seconds,
            resident_bytes,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time_seconds: boot_time + start_ticks / TICKS_PER_SECOND,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_process_figures_are_read_from_proc() {
        let mut text = String::new();
        super::render(&mut text);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let value: f64 = text
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .parse()
                .unwrap();
            // A process this young may not have used a tick of CPU yet.
            let least = if name == "process_cpu_seconds_total" {
                0.0
            } else {
                1.0
            };
            assert!(value >= least, "{name} = {value}");
        }
    }
}
