//! Process memory figures for the examples' reports.

/// The process's peak resident set size so far (Linux `VmHWM`); `None` where it cannot be read.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory the system can give without swapping (Linux `MemAvailable`); `None` where unknown.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Asks the C allocator to keep memory it is given back for reuse, instead of returning it to
/// the system (glibc on Linux; elsewhere nothing changes).
///
/// A training step allocates and frees the same large buffers every step (`[rows, vocab]`
/// logits and their gradient, gradients of the embedding and head). glibc serves each
/// allocation of 32 MB or more with a fresh `mmap` and unmaps it when freed, so every step
/// faults in and zeroes those pages again: a third of the tiny config's step on 2 cores went to
/// the kernel. Served from the heap and kept there, they are reused as they are. The cost:
/// the process keeps its peak memory until it exits. `training::run` calls this.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation policy; it is thread-safe and leaves
    // existing allocations as they are.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
