//! The process's own figures, under the names every Prometheus user knows from other
//! exporters (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_start_time_seconds`), read from `/proc/self` when the metrics
//! are scraped. Elsewhere than Linux they are simply absent.

/// One reading of the process's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessSample {
    /// User and system CPU time used so far.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Reads the figures of this process; `None` where `/proc` does not have them.
pub fn sample() -> Option<ProcessSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) and 22 (starttime) are 12, 13 and 20 after the name.
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if per_second <= 0 || page_bytes <= 0 {
        return None;
    }
    let per_second = per_second as f64;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let boot_time: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcessSample {
        cpu_seconds: (ticks(11)? + ticks(12)?) as f64 / per_second,
        resident_bytes: resident_pages * page_bytes as u64,
        open_fds,
        start_time_seconds: boot_time + ticks(19)? as f64 / per_second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test process has used some CPU, holds some memory and a few descriptors, and
    /// started recently (within a day of now).
    #[test]
    fn this_process_is_measured() {
        let before = sample().expect("Linux has /proc");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = sample().expect("Linux has /proc");
        assert!(after.cpu_seconds >= before.cpu_seconds);
        assert!(after.cpu_seconds > 0.0);
        assert!(after.resident_bytes > 1 << 20, "{after:?}");
        assert!(after.open_fds >= 3, "{after:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            after.start_time_seconds <= now + 1.0 && after.start_time_seconds > now - 86_400.0,
            "{after:?} vs {now}"
        );
    }
}
