//! What the fuzz targets share: an allocator that turns any single allocation above [`ALLOC_LIMIT`] into a
//! crash (so an unchecked size read from a file is a finding, not just a slow input), and a scratch folder per
//! process for the loaders that read files, and the seeds each target writes into its corpus at start
//! ([`init`]).

mod seeds;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The largest single allocation a loader may make for an input of at most a few MiB (the fuzz runs use
/// `-max_len` of 1 MiB): 256 MiB. A loader that sizes a buffer from a header before checking it against the
/// file's length goes over.
pub const ALLOC_LIMIT: usize = 256 << 20;

pub struct Bounded;

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn check(size: usize) {
    if size > ALLOC_LIMIT {
        // A fixed message without formatting (which would allocate, inside the allocator), then abort, which
        // libFuzzer reports as a crash and saves the input.
        let _ = std::io::stderr().write_all(b"fuzz: an allocation exceeded ALLOC_LIMIT (256 MiB)\n");
        std::process::abort();
    }
}

/// A folder of this process's own under the system's temporary directory (tmpfs when /dev/shm exists).
pub fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("rlhf-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch folder");
        dir
    })
}

/// Writes `bytes` to `name` in the scratch folder and returns its path.
pub fn put(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("cannot write into the fuzz scratch folder");
    path
}

/// Splits an input into two files' contents: the first two bytes (little-endian) give the length of the first.
pub fn split2(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (head, rest) = data.split_first_chunk::<2>()?;
    let n = (u16::from_le_bytes(*head) as usize).min(rest.len());
    Some(rest.split_at(n))
}

/// The inverse of [`split2`], for writing seeds.
pub fn join2(a: &[u8], b: &[u8]) -> Vec<u8> {
    let n = u16::try_from(a.len()).expect("first part of a two-file seed is over 64 KiB");
    [&n.to_le_bytes()[..], a, b].concat()
}

/// Each target's init hook: when `RLHF_FUZZ_SEEDS` names a folder (tools/fuzz.sh sets it to the target's
/// corpus), writes the target's seeds there before libFuzzer reads the corpus.
pub fn init(target: &str) {
    if let Some(dir) = std::env::var_os("RLHF_FUZZ_SEEDS") {
        if let Err(e) = seeds::write_seeds(target, Path::new(&dir)) {
            eprintln!("fuzz target {target}: cannot write its seeds: {e:#}");
            std::process::exit(2);
        }
    }
}
