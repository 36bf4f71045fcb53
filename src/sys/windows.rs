//! Windows host facts through the Win32 API (windows-sys), where Linux has /proc.

use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, GlobalMemoryStatusEx, MEMORYSTATUSEX, SYSTEM_INFO};

use super::OsMemory;

/// GlobalMemoryStatusEx: physical memory and the page file. `ullAvailPhys` counts the standby
/// list (Windows' page cache), so it is "available" in MemAvailable's sense; the standby list's
/// own size needs performance counters, so page_cache stays 0.
pub fn memory() -> Option<OsMemory> {
    let mut s = MEMORYSTATUSEX { dwLength: size_of::<MEMORYSTATUSEX>() as u32, ..Default::default() };
    // SAFETY: `s` is a MEMORYSTATUSEX with dwLength set, as the call requires.
    if unsafe { GlobalMemoryStatusEx(&mut s) } == 0 {
        return None;
    }
    // The page file's figures include physical memory (the commit limit): what lies beyond it is swap.
    let swap_total = s.ullTotalPageFile.saturating_sub(s.ullTotalPhys);
    let swap_used = (s.ullTotalPageFile - s.ullAvailPageFile.min(s.ullTotalPageFile))
        .saturating_sub(s.ullTotalPhys - s.ullAvailPhys.min(s.ullTotalPhys));
    Some(OsMemory {
        total: s.ullTotalPhys,
        available: s.ullAvailPhys,
        page_cache: 0,
        swap_total,
        swap_free: swap_total.saturating_sub(swap_used),
        source: "GlobalMemoryStatusEx",
    })
}

pub fn page_size() -> usize {
    let mut info = SYSTEM_INFO::default();
    // SAFETY: GetSystemInfo fills the struct it is given and cannot fail.
    unsafe { GetSystemInfo(&mut info) };
    (info.dwPageSize as usize).max(4096)
}
