//! Memory given back to the system: the process runs under a memory limit, and RSS, not
//! what the allocator considers free, is what the limit counts.

/// Review bodies of up to 4 MiB come and go. glibc's malloc raises its mmap threshold each
/// time such a block is freed, after which large bodies are carved from the heap arenas
/// (one per thread) and their memory is kept there: under a flood of large reviews that
/// is tens of MiB held after the flood. A fixed threshold keeps every block over 256 KiB
/// in its own mapping, returned to the system when freed.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called once, before any thread is
    // started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// After a cache's list: the pages of the list (each a few MiB of JSON and kube's parse
/// tree of it) were freed, but glibc keeps freed heap memory for reuse, so the RSS of a
/// large cluster's start-up would stay at its peak. Hand it back.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top and inside the heaps; it is
    // thread-safe and called at most once per completed list.
    unsafe {
        libc::malloc_trim(0);
    }
}
