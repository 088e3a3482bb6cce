//! What the process costs the machine now, read from `/proc/self` for `/metrics`: resident
//! memory and open file descriptors (every connection and socket is one). `None` where the
//! kernel does not say (not Linux, or `/proc` not mounted).

/// Resident set size in bytes (`/proc/self/statm`, second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|page| pages * page)
}

/// Open file descriptors (the entries of `/proc/self/fd`, less the one reading it).
pub fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_has_memory_and_descriptors() {
        let rss = super::resident_bytes().expect("Linux has /proc/self/statm");
        assert!(rss > 1024 * 1024, "{rss}");
        // Other tests of this binary open and close descriptors meanwhile: 64 more of ours
        // must show as (well over) 32 more.
        let before = super::open_fds().expect("Linux has /proc/self/fd");
        let files: Vec<std::fs::File> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/statm").unwrap())
            .collect();
        let with = super::open_fds().unwrap();
        assert!(with >= before + 32, "{before} then {with}");
        drop(files);
    }
}
