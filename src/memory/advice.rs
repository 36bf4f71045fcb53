//! The OS's page-cache calls behind [`super::will_need`], [`super::release`] and the prefetch
//! thread, one function per kind of advice, each by the platform's own call:
//!
//! | advice                  | Linux / Android          | macOS                  | Windows                   |
//! |-------------------------|--------------------------|------------------------|---------------------------|
//! | read these pages soon   | madvise WILLNEED         | madvise + F_RDADVISE   | PrefetchVirtualMemory     |
//! | leave this process      | madvise DONTNEED         | madvise DONTNEED       | VirtualUnlock (working set)|
//! | leave the page cache    | posix_fadvise DONTNEED   | none (said once)       | none (said once)          |
//! | no read-ahead past this | posix_fadvise RANDOM     | fcntl F_RDAHEAD 0      | FILE_FLAG_RANDOM_ACCESS   |

use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;

/// Start reading `r` of the mapping (of the file at `path`) in; returns at once.
pub fn will_need(map: &Mmap, path: &Path, r: Range<usize>) {
    #[cfg(unix)]
    let _ = map.advise_range(memmap2::Advice::WillNeed, r.start, r.len());
    #[cfg(target_os = "macos")]
    if let Ok(f) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        let ra = nix::libc::radvisory { ra_offset: r.start as i64, ra_count: r.len().min(i32::MAX as usize) as i32 };
        // SAFETY: F_RDADVISE reads the radvisory struct it is given, on a descriptor we own.
        unsafe { nix::libc::fcntl(f.as_raw_fd(), nix::libc::F_RDADVISE, &ra) };
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::Memory::{PrefetchVirtualMemory, WIN32_MEMORY_RANGE_ENTRY};
        let entry =
            WIN32_MEMORY_RANGE_ENTRY { VirtualAddress: map[r.start..].as_ptr() as *mut _, NumberOfBytes: r.len() };
        // SAFETY: the range lies inside our live mapping; the call only queues reads of it.
        unsafe { PrefetchVirtualMemory(windows_sys::Win32::System::Threading::GetCurrentProcess(), 1, &entry, 0) };
    }
    let _ = path;
}

/// Drop `r` of the mapping from this process (the next access reads the file again).
pub fn leave_process(map: &Mmap, r: Range<usize>) {
    #[cfg(unix)]
    // SAFETY: DONTNEED on a read-only shared file mapping only drops page-table entries;
    // the next access re-reads the file, so no data is lost.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, r.start, r.len()) };
    #[cfg(windows)]
    // SAFETY: VirtualUnlock on pages that are not locked takes them out of the working set
    // (and fails with ERROR_NOT_LOCKED, as expected); the mapping stays valid.
    unsafe {
        windows_sys::Win32::System::Memory::VirtualUnlock(map[r.start..].as_ptr().cast(), r.len());
    }
}

/// Drop these page-aligned ranges of the file at `path` from the page cache.
pub fn leave_page_cache(path: &Path, ranges: &[Range<usize>]) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Ok(file) = std::fs::File::open(path) {
        for r in ranges {
            let _ = nix::fcntl::posix_fadvise(
                &file,
                r.start as i64,
                r.len() as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (path, ranges);
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "note: {} has no call to drop a file's pages from the page cache: released layers leave this \
                 process but stay cached until the OS needs the memory",
                std::env::consts::OS
            )
        });
    }
}

/// Open the model for the prefetch thread's reads, with the kernel's read-ahead off: exactly
/// the bytes asked for (read-ahead past a range would fill memory the budget does not have).
pub fn open_without_read_ahead(path: &Path) -> Option<std::fs::File> {
    #[cfg(windows)]
    let f = {
        use std::os::windows::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_RANDOM_ACCESS)
            .open(path)
            .ok()?
    };
    #[cfg(not(windows))]
    let f = std::fs::File::open(path).ok()?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = nix::fcntl::posix_fadvise(&f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM);
    #[cfg(target_os = "macos")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: F_RDAHEAD takes an int flag, on a descriptor we own.
        unsafe { nix::libc::fcntl(f.as_raw_fd(), nix::libc::F_RDAHEAD, 0) };
    }
    Some(f)
}
